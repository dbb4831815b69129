// Negative numbers after flags are values (`--temperature -1`), so validation reports the
// accepted range instead of "Missing value".
import Foundation
import Testing

@Suite struct OptionParsingCLITests {
    /// (arguments, flag, words of the accepted range that the message must carry)
    static let cases: [([String], String, String)] = [
        (["chat", "turbomind", CLI.model, "--temperature", "-1"], "--temperature", "≥ 0"),
        (["chat", "turbomind", CLI.model, "--top-k", "-3"], "--top-k", "≥ 0"),
        (["chat", "turbomind", CLI.model, "--top_k", "-3"], "--top-k", "≥ 0"),
        (["chat", "turbomind", CLI.model, "--top-p", "-0.5"], "--top-p", "(0, 1]"),
        (["chat", "turbomind", CLI.model, "--repetition-penalty", "-2"], "--repetition-penalty", "> 0"),
        (["chat", "turbomind", CLI.model, "--max-new-tokens", "-5"], "--max-new-tokens", "at least 1"),
        (["chat", "turbomind", CLI.model, "--temperature", "nan"], "--temperature", "≥ 0"),
        (["convert", "llama", CLI.model, "--tp", "-1"], "--tp", "at least 1"),
        (["convert", "llama", CLI.model, "--group-size", "-128"], "--group-size", "≥ 0"),
        (["tokenize", CLI.model, "--bench-repeat", "-2"], "--bench-repeat", "at least 1"),
    ]

    @Test(arguments: cases)
    func negativeValueGivesTheRangeError(arguments: [String], flag: String, range: String) throws {
        let r = try CLI.run(arguments)
        #expect(r.status == 64, "exit status \(r.status); stderr: \(r.stderr)")
        #expect(!r.stderr.contains("Missing value"), "stderr: \(r.stderr)")
        #expect(r.stderr.contains(flag) && r.stderr.contains(range), "stderr must name \(flag) and \(range): \(r.stderr)")
    }

    /// The `=` form gives the same error, and a value that is not a number names the flag and
    /// what it takes.
    @Test func equalsFormAndNonNumbers() throws {
        let a = try CLI.run(["chat", "turbomind", CLI.model, "--temperature", "-1"])
        let b = try CLI.run(["chat", "turbomind", CLI.model, "--temperature=-1"])
        #expect(a.status == b.status && a.stderr == b.stderr)
        let seed = try CLI.run(["chat", "turbomind", CLI.model, "--seed", "-1"])
        #expect(seed.status == 64 && seed.stderr.contains("--seed") && seed.stderr.contains("0…18446744073709551615"), "\(seed.stderr)")
        let word = try CLI.run(["chat", "turbomind", CLI.model, "--top-k", "many"])
        #expect(word.status == 64 && word.stderr.contains("--top-k"), "\(word.stderr)")
    }

    /// A value that is a valid number still runs (the flags still take their values).
    @Test func validNegativeLookingContextStillParses() throws {
        let r = try CLI.run(["chat", "turbomind", CLI.model, "--temperature", "0", "--top-k", "1", "--max-new-tokens", "4"], input: "Hi\n\nexit\n")
        #expect(r.status == 0, "stderr: \(r.stderr)")
    }
}
