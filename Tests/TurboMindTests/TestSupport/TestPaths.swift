// Where the tests find their data: the golden fixtures in the repo and the real SmolLM2 model
// that Scripts/fetch-test-model builds (Scripts/test always builds it first).
import Foundation
import Testing

enum TestPaths {
    /// Tests/Fixtures/smollm2
    static let fixtures: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/smollm2")

    /// The real SmolLM2-135M-Instruct HF directory: $LMDEPLOY_TEST_MODEL, else the cache of
    /// Scripts/fetch-test-model. Missing is a failure, not a skip: the suite must test the real model.
    static func smolLM2() throws -> URL {
        let env = ProcessInfo.processInfo.environment
        let dir: URL
        if let path = env["LMDEPLOY_TEST_MODEL"] {
            dir = URL(fileURLWithPath: path)
        } else {
            let cache = env["LMDEPLOY_CACHE"].map { URL(fileURLWithPath: $0) }
                ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/lmdeploy-swift")
            dir = cache.appendingPathComponent("smollm2-135m-instruct")
        }
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors").path) else {
            Issue.record("the SmolLM2 test model is missing at \(dir.path): run Scripts/fetch-test-model")
            throw CocoaError(.fileNoSuchFile)
        }
        return dir
    }

    static func golden() throws -> [String: Any] {
        let data = try Data(contentsOf: fixtures.appendingPathComponent("golden.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }
}
