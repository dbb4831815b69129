// A Hugging Face checkpoint directory: either one `model.safetensors`, or shards listed by
// `model.safetensors.index.json` (`{"metadata": {...}, "weight_map": {tensor: shard file}}`).
// Like transformers, the single file wins when both are present.

import Foundation
import Tokenizers

/// All safetensors files of a model directory, with tensor lookup by name.
public struct SafetensorsCheckpoint: Sendable {
    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    public let directory: URL
    /// The files read, in shard order (one file for unsharded checkpoints).
    public let files: [SafetensorsFile]
    /// The index file, when the checkpoint is sharded.
    public let indexURL: URL?
    /// tensor name → position in `files`.
    private let location: [String: Int]

    /// Opens the checkpoint in `directory`, mapping and validating every file.
    public init(directory: URL) throws {
        self.directory = directory
        let fileManager = FileManager.default
        var isDirectory: ObjCBool = false
        guard fileManager.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FormatError.fileNotFound(file: directory.path, what: "a model directory")
        }
        let single = directory.appendingPathComponent(SafetensorsCheckpoint.singleFileName)
        let index = directory.appendingPathComponent(SafetensorsCheckpoint.indexFileName)
        if fileManager.fileExists(atPath: single.path) {
            let file = try SafetensorsFile(url: single)
            files = [file]
            indexURL = nil
            location = Dictionary(uniqueKeysWithValues: file.tensorNames.map { ($0, 0) })
        } else if fileManager.fileExists(atPath: index.path) {
            (files, location) = try SafetensorsCheckpoint.openShards(index: index, directory: directory)
            indexURL = index
        } else {
            let contents = (try? fileManager.contentsOfDirectory(atPath: directory.path)) ?? []
            let weightLike = contents.filter { name in
                [".bin", ".pt", ".pth", ".safetensors", ".gguf"].contains { name.hasSuffix($0) }
            }.sorted()
            throw FormatError.noCheckpoint(directory: directory.path,
                                           lookedFor: [SafetensorsCheckpoint.singleFileName, SafetensorsCheckpoint.indexFileName],
                                           found: weightLike)
        }
    }

    private static func openShards(index: URL, directory: URL) throws -> ([SafetensorsFile], [String: Int]) {
        let data: Data
        do {
            data = try Data(contentsOf: index)
        } catch {
            throw FormatError.io(file: index.path, operation: "read", message: systemMessage(error))
        }
        let root: JSONValue
        do {
            root = try JSONValue.parse(data)
        } catch {
            throw FormatError.badIndex(file: index.path, detail: "not valid JSON: \(JSONValue.explain(error))")
        }
        guard case .object(let top) = root else {
            throw FormatError.badIndex(file: index.path, detail: "top level is \(root.brief), expected an object")
        }
        guard let mapValue = top["weight_map"] else {
            throw FormatError.badIndex(file: index.path, detail: "key 'weight_map' is missing")
        }
        guard case .object(let weightMap) = mapValue, !weightMap.isEmpty else {
            throw FormatError.badIndex(file: index.path,
                                       detail: "'weight_map' must be a non-empty object of tensor name → file name, found \(mapValue.brief)")
        }
        var shardNames: [String] = []
        var shardPosition: [String: Int] = [:]
        var mapped: [(tensor: String, shard: String)] = []
        if let duplicate = weightMap.duplicateKey {
            throw FormatError.badIndex(file: index.path, detail: "weight_map names tensor '\(duplicate)' more than once")
        }
        for (tensor, value) in weightMap.entries {
            guard case .string(let shard) = value else {
                throw FormatError.badIndex(file: index.path, detail: "weight_map['\(tensor)'] must be a file name, found \(value.brief)")
            }
            guard !shard.isEmpty, !shard.hasPrefix("/"), !shard.split(separator: "/").contains("..") else {
                throw FormatError.badIndex(file: index.path,
                                           detail: "weight_map['\(tensor)'] = '\(shard)' must be a file inside \(directory.path)")
            }
            if shardPosition[shard] == nil {
                shardPosition[shard] = 0
                shardNames.append(shard)
            }
            mapped.append((tensor, shard))
        }
        shardNames.sort()
        for (position, name) in shardNames.enumerated() { shardPosition[name] = position }

        var files: [SafetensorsFile] = []
        for name in shardNames {
            let url = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else {
                throw FormatError.badIndex(file: index.path, detail: "shard '\(name)' listed in weight_map does not exist in \(directory.path)")
            }
            files.append(try SafetensorsFile(url: url))
        }

        var location: [String: Int] = [:]
        for (tensor, shard) in mapped {
            let position = shardPosition[shard]!
            guard files[position].contains(tensor) else {
                throw FormatError.badIndex(file: index.path, detail: "weight_map puts '\(tensor)' in '\(shard)', which has no such tensor")
            }
            location[tensor] = position
        }
        // Tensors a shard holds but the map omits are still loadable (transformers loads whole shards).
        for (position, file) in files.enumerated() {
            for name in file.tensorNames where location[name] == nil { location[name] = position }
        }
        return (files, location)
    }

    /// Every tensor name, sorted.
    public var tensorNames: [String] { location.keys.sorted() }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    /// The file holding tensor `name`, if any.
    public func file(containing name: String) -> SafetensorsFile? { location[name].map { files[$0] } }

    /// The paths a lookup searches, for error messages: the index (if sharded) and every file.
    public var searchedPaths: [String] {
        (indexURL.map { [$0.lastPathComponent] } ?? []) + files.map(\.url.lastPathComponent)
    }

    /// A zero-copy view of tensor `name` (any dtype). Throws `missingTensor` naming the files searched.
    public func tensor(_ name: String) throws -> TensorView {
        guard let position = location[name] else {
            throw FormatError.missingTensor(tensor: name, searched: searchedPaths.map { directory.appendingPathComponent($0).path })
        }
        return try files[position].tensor(name)
    }

    /// Tensor `name`, which must be stored as bf16, f16 or f32 (the types the engine computes with).
    public func weight(_ name: String) throws -> TensorView {
        let view = try tensor(name)
        guard view.dtype.isWeightType else {
            throw FormatError.unsupportedDType(file: file(containing: name)!.url.path, tensor: name,
                                               dtype: view.dtype, supported: DType.weightTypes)
        }
        return view
    }
}
