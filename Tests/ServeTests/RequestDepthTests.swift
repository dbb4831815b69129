// A request body nested past Foundation's limit (513 '[') used to kill the server inside
// JSONDecoder; it is a 400 `invalid_json` now.
import Foundation
import Testing
@testable import Serve

@Suite struct RequestDepthTests {
    @Test func deeplyNestedBodyIsAnInvalidJSONError() {
        struct Body: Decodable { var model: String? }
        do {
            _ = try RequestDecoding.decode(Body.self, from: Data(repeating: UInt8(ascii: "["), count: 513))
            Issue.record("a 513-deep body decoded")
        } catch {
            #expect("\(error)".contains("nested deeper than 256 levels"), "\(error)")
        }
    }
}
