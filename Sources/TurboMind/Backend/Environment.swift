// What this machine offers the engine: CPU features and the kernel ISA chosen, threads, the BLAS
// build, and whether a CUDA driver can be loaded (probed with dlopen: the binary links no CUDA).
import CBLAS
import CKernels
import Foundation

public enum EnvironmentReport {
    /// (label, value) pairs for `lmdeploy check-env`.
    public static func entries() -> [(String, String)] {
        var rows: [(String, String)] = []
        var u = utsname()
        uname(&u)
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        rows.append(("OS", "\(field(u.sysname)) \(field(u.release)) \(field(u.machine))"))
        rows.append(("CPU", cpuModel() ?? "unknown"))
        rows.append(("CPU features", String(cString: ck_cpu_features())))
        rows.append(("CPU kernels", String(cString: ck_isa())))
        rows.append(("Threads", "\(ck_threads()) (cores available to this process)"))
        rows.append(("BLAS", String(cString: openblas_get_config())))
        rows.append(("CUDA", cudaDriver()))
        return rows
    }

    static func cpuModel() -> String? {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        for line in info.split(separator: "\n") where line.hasPrefix("model name") {
            return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) }
        }
        return nil
    }

    /// The driver and device, then NVRTC, cuBLAS and the kernels, or what is missing (through the
    /// CCUDA shim: the same dlopen path the backend takes).
    static func cudaDriver() -> String {
        switch CUDARuntime.device() {
        case let .failure(error):
            if case let .unavailable(why) = error, why.contains("libcuda.so.1") {
                return "not found (no libcuda.so.1: no NVIDIA driver on this machine); --device auto uses the CPU"
            }
            return "not usable (\(error)); --device auto uses the CPU"
        case let .success(d):
            var text = String(format: "found: %@, sm_%d, %d SMs, %.1f GiB (%.1f free), driver %d.%d, %d device(s)", d.name,
                              d.computeCapability, d.multiprocessors, Double(d.total) / Double(1 << 30), Double(d.free) / Double(1 << 30),
                              d.driverVersion / 1000, d.driverVersion % 1000 / 10, d.deviceCount)
            do {
                _ = try CUDARuntime.openCompute()
                text += String(format: "\n  NVRTC %d.%d, cuBLAS %d", CUDARuntime.nvrtcVersion / 1000, CUDARuntime.nvrtcVersion % 1000 / 10,
                               CUDARuntime.cublasVersion)
                for line in CUDARuntime.libraries.split(separator: "\n") { text += "\n  \(line)" }
                let backend = try CUDABackend()
                text += "\n  kernels: \(backend.kernelOrigin)"
            } catch {
                text += "\n  but \(error): --device cuda cannot run; --device auto uses the CPU"
            }
            return text
        }
    }
}
