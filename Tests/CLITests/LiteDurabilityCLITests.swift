// The quantization tools lose nothing: killed at any point, `lite kv_qparams` leaves the previous
// parameters whole (or, inside its short rename phase, a journal that makes loading refuse the mix);
// a full disk is a clear error that leaves no partial output. Disk-full is tried on a real tmpfs
// when the tests may mount one (root), and with a file-size limit (EFBIG) otherwise.
import Foundation
import Testing

@Suite(.serialized) struct LiteDurabilityCLITests {
    static let fm = FileManager.default

    /// A work directory with calibration statistics of SmolLM2 (small sizes), made once.
    static let workDir: URL = {
        let work = fm.temporaryDirectory.appendingPathComponent("lite-durable-\(UUID().uuidString)/quant_output")
        let r = try! CLI.run(["lite", "calibrate", "--model", CLI.model, "--calib_dataset", "/usr/share/common-licenses/LGPL-2.1",
                              "--calib_samples", "1", "--calib_seqlen", "32", "--work_dir", work.path])
        precondition(r.status == 0, "calibrate failed: \(r.stderr)")
        return work
    }()

    /// name → bytes of the parameter files in `dir` (hidden files aside).
    static func snapshot(_ dir: URL) -> [String: Data] {
        var out: [String: Data] = [:]
        for name in (try? fm.contentsOfDirectory(atPath: dir.path)) ?? [] where !name.hasPrefix(".") {
            out[name] = fm.contents(atPath: dir.appendingPathComponent(name).path)
        }
        return out
    }

    static func kvQParams(_ dir: URL, symmetric: Bool) -> [String] {
        ["lite", "kv_qparams", "--work_dir", workDir.path, "--turbomind_dir", dir.path, "--kv_sym", symmetric ? "True" : "False", "--num_tp", "1"]
    }

    @Test func aKilledKVQParamsRunLeavesTheOldSetOrAJournalNeverAMix() throws {
        let dir = Self.fm.temporaryDirectory.appendingPathComponent("kvq-kill-\(UUID().uuidString)")
        try Self.fm.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? Self.fm.removeItem(at: dir) }
        #expect(try CLI.run(Self.kvQParams(dir, symmetric: true)).status == 0)
        let old = Self.snapshot(dir)
        #expect(old.count == 60)
        var outcomes: [String: Int] = [:]
        for delay in [0.0, 0.02, 0.05, 0.08, 0.1, 0.13, 0.16, 0.2, 0.3, 0.5] {
            let p = Process()
            p.executableURL = CLI.binary
            p.arguments = Self.kvQParams(dir, symmetric: false)
            p.standardError = FileHandle.nullDevice
            try p.run()
            Thread.sleep(forTimeInterval: delay)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let now = Self.snapshot(dir)
            let journal = Self.fm.fileExists(atPath: dir.appendingPathComponent(".replacing-file-set").path)
            if journal {
                outcomes["journal", default: 0] += 1
                // Loading refuses the half-replaced set by name.
                let ppl = try CLI.run(["lite", "perplexity", CLI.model, "--dataset", "/usr/share/common-licenses/GPL-3", "--window", "64",
                                       "--quant-policy", "4", "--kv-params", dir.path])
                #expect(ppl.status != 0 && ppl.stderr.contains("half replaced"), "\(ppl.stderr)")
            } else if now == old {
                outcomes["old", default: 0] += 1
            } else {
                outcomes["new", default: 0] += 1
                #expect(now.count == 60 && now.keys.sorted() == old.keys.sorted(), "a kill after \(delay) s left \(now.count) files")
                #expect(now.allSatisfy { $0.value != old[$0.key] }, "a kill after \(delay) s left a mix of the old and the new set")
            }
            // Whatever happened, the next complete run gives the new set and no journal.
            #expect(try CLI.run(Self.kvQParams(dir, symmetric: true)).status == 0)
            #expect(Self.snapshot(dir) == old)
            let hidden = try Self.fm.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }
            #expect(hidden.isEmpty, "a kill after \(delay) s: leftover staging files \(hidden)")
        }
        print("kv_qparams kills: \(outcomes)")
    }

    @Test func aFullDiskIsAClearErrorThatLeavesNoPartialOutput() throws {
        let root = Self.fm.temporaryDirectory.appendingPathComponent("kvq-full-\(UUID().uuidString)")
        try Self.fm.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? Self.fm.removeItem(at: root) }
        let mounted = geteuid() == 0 && (try? CLI.execute(URL(fileURLWithPath: "/bin/mount"), ["-t", "tmpfs", "-o", "size=12k", "tmpfs", root.path]))?.status == 0
        defer { if mounted { _ = try? CLI.execute(URL(fileURLWithPath: "/bin/umount"), [root.path]) } }
        func limited(_ arguments: [String]) throws -> CLI.Result {
            if mounted { return try CLI.run(arguments) }
            // No tmpfs: a 4 KiB file-size limit makes writes fail with EFBIG the same way (SIGXFSZ ignored).
            let quoted = ([CLI.binary.path] + arguments).map { "'\($0)'" }.joined(separator: " ")
            return try CLI.execute(URL(fileURLWithPath: "/bin/bash"), ["-c", "trap '' XFSZ; ulimit -f 4; exec \(quoted)"])
        }
        let full = mounted ? "No space left on device" : "File too large"
        // kv_qparams into a directory that cannot hold 60 files.
        let params = root.appendingPathComponent("weights")
        try Self.fm.createDirectory(at: params, withIntermediateDirectories: true)
        if mounted {
            let r = try limited(Self.kvQParams(params, symmetric: false))
            #expect(r.status != 0 && r.stderr.contains(full), "\(r.stderr)")
            let left = try Self.fm.contentsOfDirectory(atPath: params.path)
            #expect(left.isEmpty, "partial output left: \(left)")
        }
        // calibrate's statistics do not fit either: the error names the file, nothing partial stays.
        let work = root.appendingPathComponent("quant_output")
        let r = try limited(["lite", "calibrate", "--model", CLI.model, "--calib_dataset", "/usr/share/common-licenses/LGPL-2.1",
                             "--calib_samples", "1", "--calib_seqlen", "32", "--work_dir", work.path])
        #expect(r.status != 0 && r.stderr.contains(full) && r.stderr.contains("calib_stats"), "\(r.stderr)")
        let left = (try? Self.fm.contentsOfDirectory(atPath: work.path)) ?? []
        #expect(!left.contains { $0.hasPrefix(".") || $0.hasSuffix(".safetensors") }, "partial output left: \(left)")
        print("disk-full test on \(mounted ? "a 12 KiB tmpfs" : "a 4 KiB file-size limit")")
    }
}
