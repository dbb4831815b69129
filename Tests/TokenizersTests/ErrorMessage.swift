// The text of the error a body throws ("no error" when it throws none), for tests that check messages.

func errorMessage(_ body: () throws -> Void) -> String {
    do {
        try body()
        return "no error"
    } catch {
        return "\(error)"
    }
}
