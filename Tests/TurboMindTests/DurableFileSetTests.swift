// DurableFileSet.replace after a run that was killed before its renames: the staging folder and a
// journal's unrenamed temporary it left are removed, the set is written, and nothing hidden stays.
import Foundation
import Testing
@testable import TurboMind

@Suite struct DurableFileSetTests {
    @Test func leftoversOfAKilledRunAreRemoved() throws {
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("durable-set-\(UUID().uuidString)")
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: dir) }
        let staging = dir.appendingPathComponent(".staging-4242-7")
        try fm.createDirectory(at: staging, withIntermediateDirectories: false)
        try Data([1, 2, 3]).write(to: staging.appendingPathComponent("layers.0.past_kv_scale.0.weight"))
        try Data("staging .staging-4242-7\n".utf8).write(to: dir.appendingPathComponent(".\(DurableFileSet.journalName).tmp-4242-9"))
        try Data([9]).write(to: dir.appendingPathComponent("keep.bin"))   // not hidden, not in the set: untouched
        try DurableFileSet.replace([(name: "a.weight", bytes: [1, 2]), (name: "b.weight", bytes: [3])], in: dir)
        let entries = try fm.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(entries == ["a.weight", "b.weight", "keep.bin"], "\(entries)")
        #expect(try Data(contentsOf: dir.appendingPathComponent("a.weight")) == Data([1, 2]))
        #expect(DurableFileSet.interrupted(in: dir) == nil)
    }
}
