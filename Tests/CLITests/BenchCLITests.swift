// `lmdeploy bench` prints the JSON lines its --help promises.
import Foundation
import Testing

@Suite struct BenchCLITests {
    func jsonLines(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    @Test func singleSequenceFigures() throws {
        let r = try CLI.run(["bench", CLI.model, "--input-len", "16", "--output-len", "8", "--runs", "1"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let lines = jsonLines(r.stdout)
        #expect(lines.map { $0["bench"] as? String } == ["prefill", "decode"])
        for line in lines { #expect((line["tokens_per_s"] as? Double ?? 0) > 0) }
    }

    @Test func servingFiguresPerConcurrencyLevel() throws {
        let r = try CLI.run(["bench", CLI.model, "--concurrency", "1,3", "--num-prompts", "3", "--input-len", "12", "--output-len", "5", "--random-lengths"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let lines = jsonLines(r.stdout)
        #expect(lines.map { $0["concurrency"] as? Int } == [1, 3])
        for line in lines {
            for key in ["request_throughput", "output_tokens_per_s", "ttft_ms_p50", "ttft_ms_p99", "itl_ms_p50", "itl_ms_p99", "peak_rss_mb"] {
                #expect((line[key] as? Double ?? -1) > 0, "\(key) missing or not positive in \(line)")
            }
        }
        let bad = try CLI.run(["bench", CLI.model, "--concurrency", "0,x"])
        #expect(bad.status != 0 && bad.stderr.contains("--concurrency"))
    }
}
