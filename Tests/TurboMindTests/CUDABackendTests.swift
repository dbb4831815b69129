// The CUDA backend from a machine's point of view: without a GPU (CI) `--device cuda` is a clear
// error and `auto` is the CPU; with one, every CUDA op matches the CPU backend (CUDASelfTest) and
// SmolLM2 matches the golden outputs. The GPU checks skip, saying so, where no GPU is usable.
import Foundation
import Testing
@testable import TurboMind

let cudaUsable: Bool = (try? CUDABackend()) != nil

@Suite struct CUDABackendTests {
    @Test(.enabled(if: !cudaUsable, "a usable GPU is present: the no-GPU behaviour is not observable here"))
    func withoutAGPUCUDAIsAClearErrorAndAutoIsTheCPU() throws {
        #expect(throws: CUDAError.self) { try CUDABackend() }
        do {
            _ = try DeviceChoice.cuda.resolve()
            Issue.record("--device cuda resolved without a GPU")
        } catch let error as CUDAError {
            guard case let .unavailable(why) = error else { Issue.record("\(error) is not .unavailable"); return }
            // Names what is missing: the driver library, a GPU, NVRTC or cuBLAS.
            #expect(["libcuda.so.1", "GPU", "NVRTC", "cuBLAS"].contains { why.contains($0) }, "unhelpful: \(why)")
        }
        guard case let .cpu(note) = try DeviceChoice.auto.resolve() else {
            Issue.record("--device auto did not fall back to the CPU")
            return
        }
        #expect(note?.contains("using the CPU") == true)
        let row = EnvironmentReport.entries().first { $0.0 == "CUDA" }?.1 ?? ""
        #expect(row.hasPrefix("not found") || row.hasPrefix("not usable"), "check-env CUDA row: \(row)")
    }

    @Test func everyKernelTheBackendLaunchesIsInTheEmbeddedSource() {
        let source = CUDARuntime.kernelSource
        for name in ["to_f16", "f32_to_f16", "embed", "rmsnorm", "silu_mul", "add", "add_bias", "gather_rows", "rope_store_kv", "attention",
                     "attention_d64", "attention_d128", "attention_rope_d64", "attention_rope_d128", "attention_tiles_d64",
                     "attention_tiles_d128", "gemv_f16", "sample_rows", "attention_mma_d128", "gemm_skinny_merge", "gemm_skinny_merge_silu",
                     "attention_merge_d64", "attention_merge_d128", "rope_store_kv_i8", "attention_i8_d64", "attention_i8_d128",
                     "attention_tiles_i8_d64", "attention_mma_i8_d128"] {
            // Any form: `void name(`, `void __launch_bounds__(N[, M]) name(`, or the decode attention's
            // instantiation `ATTENTION_DECODE[_I8]([__launch_bounds__(N, M) ]name, D[, FUSE])`, or its merge's `ATTENTION_MERGE(D)`.
            let plain = source.contains("extern \"C\" __global__ void \(name)(")
            let bounded = source.range(of: "extern \"C\" __global__ void __launch_bounds__\\([A-Z_0-9, ]+\\) \(name)\\(", options: .regularExpression) != nil
            let decode = source.range(of: "\nATTENTION_DECODE(_I8)?\\((__launch_bounds__\\([0-9, ]+\\) )?\(name), ", options: .regularExpression) != nil
            let merge = name.hasPrefix("attention_merge_d") && source.contains("\nATTENTION_MERGE(\(name.dropFirst("attention_merge_d".count)))")
            #expect(plain || bounded || decode || merge, "kernels.cu has no kernel \(name)")
        }
    }

    /// LMDEPLOY_CUDA_KERNELS replaces the embedded source with the file's text; an unreadable path is an
    /// error naming it (a silent fallback would time the wrong kernels); unset or empty keeps the embedded one.
    @Test func kernelSourceOverrideReadsTheNamedFileOrFails() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("kernels-override-\(UUID().uuidString).cu")
        try "// variant\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(try CUDARuntime.kernelSourceText(environment: ["LMDEPLOY_CUDA_KERNELS": file.path]) == "// variant\n")
        #expect(try CUDARuntime.kernelSourceText(environment: [:]) == CUDARuntime.kernelSource)
        #expect(try CUDARuntime.kernelSourceText(environment: ["LMDEPLOY_CUDA_KERNELS": ""]) == CUDARuntime.kernelSource)
        let missing = file.path + ".missing"
        let error = #expect(throws: CUDAError.self) { try CUDARuntime.kernelSourceText(environment: ["LMDEPLOY_CUDA_KERNELS": missing]) }
        #expect(error?.description.contains(missing) == true, "\(String(describing: error))")
    }

    /// kernels.cu compiles for Ampere and Hopper wherever NVRTC is found, GPU or not (locally:
    /// `pip install --target DIR nvidia-cuda-nvrtc` and LMDEPLOY_CUDA_LIBS=DIR/nvidia/cu13/lib).
    @Test(.enabled(if: CUDARuntime.nvrtcPresent, "NVRTC not found (set LMDEPLOY_CUDA_LIBS): kernels.cu compile check skipped"),
          arguments: [80, 90])
    func kernelsCompileWithNVRTC(arch: Int) throws {
        let size = try CUDARuntime.compileKernels(arch: arch)
        #expect(size > 10_000, "a \(size)-byte cubin for sm_\(arch)")
    }

    @Test(.enabled(if: cudaUsable, "no usable GPU (driver, NVRTC or cuBLAS missing): CUDA kernel checks skipped"))
    func cudaOpsMatchTheCPUBackend() async throws {
        let lines = LineLog()
        let test = CUDASelfTest { lines.append($0) }
        let model = try? TestPaths.smolLM2()
        let outcome = await test.run(model: model, fixtures: TestPaths.fixtures)
        #expect(outcome.failed == 0, "\(lines.text)")
        #expect(outcome.passed >= 16)
    }
}

final class LineLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ s: String) {
        lock.lock()
        lines.append(s)
        lock.unlock()
    }
    var text: String {
        lock.lock()
        defer { lock.unlock() }
        return lines.joined(separator: "\n")
    }
}
