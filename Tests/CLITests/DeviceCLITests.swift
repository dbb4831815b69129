// `--device` on the command line and `lmdeploy selftest`: on a machine without a usable GPU (CI)
// check-env says CUDA is not found, `--device cuda` fails with the reason, `auto` runs on the CPU and
// the selftest reports its CUDA checks as skipped. On a GPU machine the same commands use it.
import Foundation
import Testing
import TurboMind

let gpuUsable: Bool = (try? CUDABackend()) != nil

@Suite struct DeviceCLITests {
    @Test func checkEnvReportsCUDA() throws {
        let r = try CLI.run(["check-env"])
        #expect(r.status == 0)
        let row = r.stdout.split(separator: "\n").first { $0.hasPrefix("CUDA") }.map(String.init) ?? ""
        if gpuUsable {
            #expect(row.contains("found:"), "\(row)")
        } else {
            #expect(row.contains("not found") || row.contains("not usable"), "\(row)")
        }
    }

    @Test func deviceFlagChoosesTheBackend() throws {
        let args = ["bench", CLI.model, "--input-len", "6", "--output-len", "2", "--runs", "1"]
        let auto = try CLI.run(args + ["--device", "auto"])
        #expect(auto.status == 0, "stderr: \(auto.stderr)")
        #expect(auto.stdout.contains(gpuUsable ? "\"backend\":\"CUDA" : "\"backend\":\"CPU"), "\(auto.stdout)")
        let cuda = try CLI.run(args + ["--device", "cuda"])
        if gpuUsable {
            #expect(cuda.status == 0 && cuda.stdout.contains("\"backend\":\"CUDA"), "stderr: \(cuda.stderr)")
        } else {
            #expect(cuda.status != 0 && cuda.stderr.contains("CUDA is not available"), "stderr: \(cuda.stderr)")
        }
        let bad = try CLI.run(args + ["--device", "gpu"])
        #expect(bad.status != 0 && bad.stderr.contains("--device must be cpu, cuda or auto"), "stderr: \(bad.stderr)")
    }

    /// `--dtype`: bfloat16 runs on the CPU and says so; float16 is CUDA's and refused on the CPU with the
    /// choices that work there; a value outside lmdeploy's list names the list.
    @Test func dtypeFlagIsAppliedOrRefused() throws {
        let args = ["bench", CLI.model, "--input-len", "12", "--output-len", "2", "--runs", "1", "--device", "cpu"]
        let bf16 = try CLI.run(args + ["--dtype", "bfloat16"])
        #expect(bf16.status == 0 && bf16.stdout.contains("bf16 prefill"), "stdout: \(bf16.stdout) stderr: \(bf16.stderr)")
        let fp32 = try CLI.run(args + ["--dtype", "float32"])
        #expect(fp32.status == 0 && !fp32.stdout.contains("bf16 prefill"), "stdout: \(fp32.stdout) stderr: \(fp32.stderr)")
        let fp16 = try CLI.run(args + ["--dtype", "float16"])
        #expect(fp16.status != 0 && fp16.stderr.contains("--dtype float16 applies to CUDA"), "stderr: \(fp16.stderr)")
        let bad = try CLI.run(args + ["--dtype", "half"])
        #expect(bad.status != 0 && bad.stderr.contains("--dtype must be auto, float32, float16 or bfloat16, got 'half'"), "stderr: \(bad.stderr)")
    }

    /// `--lm-head-dtype`: int8 runs and is reported in bench's JSON (both spellings); other values name the choices.
    @Test func lmHeadFlagIsAppliedOrRefused() throws {
        let args = ["bench", CLI.model, "--input-len", "6", "--output-len", "2", "--runs", "1", "--device", "cpu"]
        let int8 = try CLI.run(args + ["--lm-head-dtype", "int8"])
        #expect(int8.status == 0 && int8.stdout.contains("\"lm_head_dtype\":\"int8\""), "stdout: \(int8.stdout) stderr: \(int8.stderr)")
        let underscore = try CLI.run(args + ["--lm_head_dtype", "int8"])
        #expect(underscore.status == 0 && underscore.stdout.contains("\"lm_head_dtype\":\"int8\""), "stderr: \(underscore.stderr)")
        let bad = try CLI.run(args + ["--lm-head-dtype", "int4"])
        #expect(bad.status != 0 && bad.stderr.contains("--lm-head-dtype must be auto or int8, got 'int4'"), "stderr: \(bad.stderr)")
    }

    @Test(.enabled(if: !gpuUsable, "a usable GPU is present: the selftest runs instead (see CUDABackendTests)"))
    func selftestSkipsWithoutAGPU() throws {
        let auto = try CLI.run(["selftest", "--device", "auto"])
        #expect(auto.status == 0)
        #expect(auto.stdout.contains("SKIP all CUDA checks") && auto.stdout.contains("0 passed, 0 failed, 1 skipped"), "\(auto.stdout)")
        let cuda = try CLI.run(["selftest", "--device", "cuda"])
        #expect(cuda.status != 0 && cuda.stderr.contains("CUDA is not available"), "stderr: \(cuda.stderr)")
    }
}
