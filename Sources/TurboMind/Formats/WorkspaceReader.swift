// Loads a TurboMind workspace for the engine: `config.ini` is parsed and checked, every weight file
// named by it must exist with exactly shape × element size bytes, and the weights come back as
// `ModelWeights` in HF layout (`[out, in]`, rotate-half q/k order):
//  - the embedding, output and norm files are used in place (mmapped, zero copy: their layout is
//    HF's; the vocab padding rows are left out of the view);
//  - linear weights are stored transposed, q/k permuted for interleaved rotary and split over
//    tensor-parallel ranks: each is rebuilt once into an owned buffer of the workspace's dtype
//    (a pure element move, no rounding), the ranks merged, layers in parallel.

import Foundation

public struct LoadedWorkspace: @unchecked Sendable {
    public let layout: WorkspaceLayout
    /// config.ini as read (inference parameters included).
    public let workspace: WorkspaceConfig
    /// The config the engine runs.
    public let config: ModelConfig
    public let weights: ModelWeights
}

public enum WorkspaceReader {
    /// Reads the workspace at `layout`. Errors name the offending file.
    public static func load(_ layout: WorkspaceLayout) throws -> LoadedWorkspace {
        let iniPath = layout.configINI.path
        let workspace = try WorkspaceConfig.load(layout.configINI)
        let dtype = try workspace.weightDType(file: iniPath)
        let sourceConfigURL = layout.tokenizer.appendingPathComponent(ModelConfig.fileName)
        let source = FileManager.default.fileExists(atPath: sourceConfigURL.path) ? try ModelConfig.load(file: sourceConfigURL) : nil

        // Layer files past num_layer: config.ini was edited or belongs to another model.
        let listed = (try? FileManager.default.contentsOfDirectory(atPath: layout.weights.path)) ?? []
        let extraLayers = Set(listed.compactMap { name -> Int? in
            let parts = name.split(separator: ".")
            guard parts.count > 2, parts[0] == "layers", let index = Int(parts[1]), index >= workspace.numLayer else { return nil }
            return index
        }).sorted()
        if let first = extraLayers.first {
            throw FormatError.invalidConfigValue(file: iniPath, key: "[llama] num_layer", value: "\(workspace.numLayer)",
                                                 expected: "the workspace's layer count: \(layout.weights.path) also holds files of layers \(first)…\(extraLayers.last!) (\(extraLayers.count) extra layers)")
        }
        let plan = WorkspacePlan(config: workspace, outputBias: workspace.attnBias == 1)
        // int4 (AWQ): the linears are qweight/scales_zeros pairs, checked below with their own sizes.
        var int4Mapped: [String: MappedFile] = [:]
        let int4 = workspace.isInt4
        let tensors = plan.tensors.filter { !int4 || !WorkspacePlan.isLinear($0) }
        if int4 { try plan.checkInt4(group: workspace.groupSize, file: iniPath) }
        let int4Files = int4 ? plan.int4Files : []
        for f in int4Files {
            for (name, expected) in [(f.qweightName, f.qweightBytes), (f.scalesZerosName, f.scalesZerosBytes(group: workspace.groupSize))] {
                let url = layout.weights.appendingPathComponent(name)
                let file: MappedFile
                do { file = try MappedFile(path: url.path) } catch FormatError.fileNotFound {
                    throw FormatError.fileNotFound(file: url.path, what: "int4 weight '\(name)' of the workspace (\(iniPath): weight_type = int4, group_size = \(workspace.groupSize), tensor_para_size = \(workspace.tensorParaSize))")
                }
                guard file.bytes.count == expected else {
                    throw FormatError.invalid(file: url.path, field: "size",
                                              expected: "\(expected) bytes (int4, group_size \(workspace.groupSize) from \(iniPath)), found \(file.bytes.count) bytes: truncated, or written for another config")
                }
                int4Mapped[name] = file
            }
        }
        // Check every file before reading any: a missing or short file is named at once.
        var mapped: [String: MappedFile] = [:]
        for tensor in tensors {
            let url = layout.weights.appendingPathComponent(tensor.name)
            let file: MappedFile
            do { file = try MappedFile(path: url.path) } catch FormatError.fileNotFound {
                throw FormatError.fileNotFound(file: url.path, what: "weight '\(tensor.name)' of the workspace (\(iniPath): num_layer = \(workspace.numLayer), tensor_para_size = \(workspace.tensorParaSize), attn_bias = \(workspace.attnBias))")
            }
            let expected = tensor.elementCount * dtype.byteSize
            guard file.bytes.count == expected else {
                throw FormatError.invalid(file: url.path, field: "size",
                                          expected: "\(expected) bytes (shape \(tensor.shape) of \(workspace.weightType) from \(iniPath)), found \(file.bytes.count) bytes: truncated, or written for another config")
            }
            mapped[tensor.name] = file
        }
        let files = MappedWorkspaceFiles(mapped: mapped, shapes: Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.shape) }),
                                         dtype: dtype)
        func view(_ name: String, shape: [Int]? = nil, as newName: String) -> TensorView {
            files.view(name, shape: shape, as: newName)
        }

        // Output bias: present when any rank-0 file has a non-zero byte (lmdeploy writes zeros for
        // models without one); every rank holds the same copy.
        var hasOutputBias = false
        if workspace.attnBias == 1 {
            for i in 0..<workspace.numLayer {
                let name = "layers.\(i).attention.wo.0.bias"
                if mapped[name]!.bytes.contains(where: { $0 != 0 }) { hasOutputBias = true }
                for r in 1..<workspace.tensorParaSize {
                    let other = "layers.\(i).attention.wo.\(r).bias"
                    guard mapped[other]!.bytes.elementsEqual(mapped[name]!.bytes) else {
                        throw FormatError.invalid(file: layout.weights.appendingPathComponent(other).path, field: "contents",
                                                  expected: "the same output bias as \(name) (lmdeploy copies it to every rank)")
                    }
                }
            }
        }
        let config = try workspace.modelConfig(source: source, hasOutputBias: hasOutputBias, file: iniPath)
        let hidden = config.hiddenSize, vocab = config.vocabSize

        let embed = view("tok_embeddings.weight", shape: [vocab, hidden], as: "tok_embeddings.weight")
        let lmHead = view("output.weight", shape: [vocab, hidden], as: "output.weight")
        let norm = view("norm.weight", as: "norm.weight")

        // Linear weights, rebuilt per layer (in parallel: layers are independent).
        let byLayer = Dictionary(grouping: tensors.filter { $0.name.hasPrefix("layers.") }) { plan -> Int in
            Int(plan.name.split(separator: ".")[1])!
        }
        let slots = LayerSlots(count: workspace.numLayer)
        let outputBias = hasOutputBias
        if int4 {
            let group = workspace.groupSize
            let mappedInt4 = MappedInt4Files(mapped: int4Mapped)
            let failures = LayerFailures()
            DispatchQueue.concurrentPerform(iterations: workspace.numLayer) { index in
                do {
                    slots.set(index, try restoreInt4Layer(index, plans: byLayer[index] ?? [], plan: plan, files: files, int4: mappedInt4,
                                                          group: group, outputBias: outputBias, layersDir: layout.weights))
                } catch { failures.record(error) }
            }
            if let error = failures.first { throw error }
        } else {
            DispatchQueue.concurrentPerform(iterations: workspace.numLayer) { index in
                slots.set(index, restoreLayer(index, plans: byLayer[index]!, plan: plan, files: files, outputBias: outputBias))
            }
        }
        let weights = ModelWeights(embed: embed, norm: norm, lmHead: lmHead, layers: slots.all)
        return LoadedWorkspace(layout: layout, workspace: workspace, config: config, weights: weights)
    }

    private static func restoreLayer(_ index: Int, plans: [TensorPlan], plan: WorkspacePlan, files: MappedWorkspaceFiles,
                                     outputBias: Bool) -> LayerWeights {
        let p = "layers.\(index)."
        let dtype = files.dtype
        func view(_ name: String, _ shape: [Int]?, _ newName: String) -> TensorView { files.view(name, shape: shape, as: newName) }
        // Owned HF-layout buffers for every canonical tensor restored from transposed/gathered files.
        var owned: [String: TensorView] = [:]
        for name in ["q", "k", "v", "o", "gate", "up", "down"] + (plan.bias ? ["q_bias", "k_bias", "v_bias"] : []) {
            let canonical = p + name
            owned[canonical] = TensorView(name: canonical, dtype: dtype, shape: plan.canonicalShape(canonical)) { _ in }
        }
        for tensor in plans {
            switch tensor.kind {
            case .rows: continue
            case .transposed, .gather:
                let targets = tensor.sources.map { owned[$0]! }
                WorkspaceTransform.restore(tensor, file: files.mapped[tensor.name]!.bytes.baseAddress!, elementSize: dtype.byteSize,
                                           targets: targets.map { UnsafeMutableRawPointer(mutating: $0.data.baseAddress!) },
                                           targetColumns: targets.map { $0.shape.count > 1 ? $0.shape[1] : 1 })
                // The file's pages are not needed again: drop them so peak memory is the rebuilt weights only.
                WorkspaceTransform.releasePages(files.view(tensor.name, as: tensor.name))
            }
        }
        var layer = LayerWeights(
            attnNorm: view(p + "attention_norm.weight", nil, p + "attention_norm.weight"),
            q: owned[p + "q"]!, k: owned[p + "k"]!, v: owned[p + "v"]!, o: owned[p + "o"]!,
            ffnNorm: view(p + "ffn_norm.weight", nil, p + "ffn_norm.weight"),
            gate: owned[p + "gate"]!, up: owned[p + "up"]!, down: owned[p + "down"]!)
        if plan.bias {
            layer.qBias = owned[p + "q_bias"]
            layer.kBias = owned[p + "k_bias"]
            layer.vBias = owned[p + "v_bias"]
            if outputBias { layer.oBias = view(p + "attention.wo.0.bias", nil, p + "attention.wo.bias") }
        }
        return layer
    }
}

extension WorkspaceReader {
    /// An int4 layer: norms and biases as in fp16, the seven linears rebuilt into owned AutoAWQ-layout
    /// tensors (4-bit sized; the dense views are empty) from the qweight/scales_zeros files.
    fileprivate static func restoreInt4Layer(_ index: Int, plans: [TensorPlan], plan: WorkspacePlan, files: MappedWorkspaceFiles,
                                             int4: MappedInt4Files, group: Int, outputBias: Bool, layersDir: URL) throws -> LayerWeights {
        let p = "layers.\(index)."
        let dtype = files.dtype
        let (hidden, inter) = (plan.hidden, plan.inter)
        let (qDim, kvDim) = (plan.heads * plan.headDim, plan.kvHeads * plan.headDim)
        let shapes: [String: (out: Int, in: Int)] = ["q": (qDim, hidden), "k": (kvDim, hidden), "v": (kvDim, hidden), "o": (hidden, qDim),
                                                     "gate": (inter, hidden), "up": (inter, hidden), "down": (hidden, inter)]
        var linears: [String: AWQWeights] = [:]
        for (name, s) in shapes { linears[p + name] = AWQWorkspace.emptyLinear(p + name, out: s.out, inFeatures: s.in, group: group) }
        for f in plan.int4Linears(index) {
            var named = f
            named.name = layersDir.appendingPathComponent(f.name).path
            try AWQWorkspace.restore(named, qweight: int4.mapped[f.qweightName]!.bytes, scalesZeros: int4.mapped[f.scalesZerosName]!.bytes,
                                     targets: f.sources.map { linears[$0]! }, group: group)
        }
        let awq = AWQLayerWeights(q: linears[p + "q"]!, k: linears[p + "k"]!, v: linears[p + "v"]!, o: linears[p + "o"]!,
                                  gate: linears[p + "gate"]!, up: linears[p + "up"]!, down: linears[p + "down"]!)
        func empty(_ name: String, _ inFeatures: Int) -> TensorView {
            TensorView(name: p + name + " (AWQ int4: see qweight)", dtype: dtype, shape: [0, inFeatures]) { _ in }
        }
        var layer = LayerWeights(
            attnNorm: files.view(p + "attention_norm.weight", as: p + "attention_norm.weight"),
            q: empty("q", hidden), k: empty("k", hidden), v: empty("v", hidden), o: empty("o", qDim),
            ffnNorm: files.view(p + "ffn_norm.weight", as: p + "ffn_norm.weight"),
            gate: empty("gate", hidden), up: empty("up", hidden), down: empty("down", inter))
        layer.awq = awq
        if plan.bias {
            // Biases: the fp16 gather plans, restored like the fp16 reader does.
            var owned: [String: TensorView] = [:]
            for name in ["q_bias", "k_bias", "v_bias"] {
                owned[p + name] = TensorView(name: p + name, dtype: dtype, shape: plan.canonicalShape(p + name)) { _ in }
            }
            for tensor in plans {
                guard case .gather = tensor.kind else { continue }
                let targets = tensor.sources.map { owned[$0]! }
                WorkspaceTransform.restore(tensor, file: files.mapped[tensor.name]!.bytes.baseAddress!, elementSize: dtype.byteSize,
                                           targets: targets.map { UnsafeMutableRawPointer(mutating: $0.data.baseAddress!) },
                                           targetColumns: targets.map { $0.shape.count > 1 ? $0.shape[1] : 1 })
            }
            layer.qBias = owned[p + "q_bias"]
            layer.kBias = owned[p + "k_bias"]
            layer.vBias = owned[p + "v_bias"]
            if outputBias { layer.oBias = files.view(p + "attention.wo.0.bias", as: p + "attention.wo.bias") }
        }
        return layer
    }
}

/// The int4 files of a workspace, shared read-only by the loading threads.
private final class MappedInt4Files: @unchecked Sendable {
    let mapped: [String: MappedFile]
    init(mapped: [String: MappedFile]) { self.mapped = mapped }
}

/// The first error of the loading threads.
private final class LayerFailures: @unchecked Sendable {
    private var error: Error?
    private let lock = NSLock()
    func record(_ e: Error) { lock.lock(); if error == nil { error = e }; lock.unlock() }
    var first: Error? { lock.lock(); defer { lock.unlock() }; return error }
}

/// The mapped weight files of one workspace, shared read-only by the loading threads.
private final class MappedWorkspaceFiles: @unchecked Sendable {
    let mapped: [String: MappedFile]
    let shapes: [String: [Int]]
    let dtype: DType

    init(mapped: [String: MappedFile], shapes: [String: [Int]], dtype: DType) {
        self.mapped = mapped
        self.shapes = shapes
        self.dtype = dtype
    }

    /// A zero-copy view of the first `shape` elements of file `name` (its whole shape by default).
    func view(_ name: String, shape: [Int]? = nil, as newName: String) -> TensorView {
        let file = mapped[name]!
        let shape = shape ?? shapes[name]!
        let count = shape.reduce(1, *) * dtype.byteSize
        return TensorView(name: newName, dtype: dtype, shape: shape,
                          data: UnsafeRawBufferPointer(rebasing: file.bytes[0..<count]), owner: file)
    }
}

/// Results of the loading threads, one slot per layer.
private final class LayerSlots: @unchecked Sendable {
    private var slots: [LayerWeights?]
    private let lock = NSLock()

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ layer: LayerWeights) {
        lock.lock()
        slots[index] = layer
        lock.unlock()
    }

    var all: [LayerWeights] { slots.map { $0! } }
}
