// Foundation's JSON parsers trap on nesting past 512 levels (513 '[' killed the config_json fuzzer's
// process); every reader of outside JSON checks the depth first and reports an error instead.
import Foundation
import Testing
import Tokenizers
@testable import TurboMind

@Suite struct FoundationJSONGuardTests {
    @Test func deepNestingIsAnErrorNotACrash() throws {
        for doc in [String(repeating: "[", count: 513), "{\"a\":" + String(repeating: "[", count: 300) + String(repeating: "]", count: 300) + "}"] {
            #expect(!FoundationJSONGuard.accepts(Data(doc.utf8)))
            do {
                _ = try ModelConfig.decode(Data(doc.utf8), file: "config.json")
                Issue.record("a document nested \(doc.count / 2)+ levels decoded")
            } catch let error as FormatError {
                #expect("\(error)".contains("nested deeper than 256 levels"), "\(error)")
            }
        }
    }

    @Test func bracketsInsideStringsAndShallowDocumentsPass() {
        let inString = "{\"s\":\"" + String(repeating: "[", count: 1000) + "\\\"[{\"}"
        #expect(FoundationJSONGuard.accepts(Data(inString.utf8)))
        let at256 = String(repeating: "[", count: 256) + String(repeating: "]", count: 256)
        #expect(FoundationJSONGuard.accepts(Data(at256.utf8)))
        #expect(!FoundationJSONGuard.accepts(Data(("[" + at256 + "]").utf8)))
    }
}
