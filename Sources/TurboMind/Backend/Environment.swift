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

    /// "found: driver 13.0, 1 device(s)" or why not.
    static func cudaDriver() -> String {
        guard let lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL) else {
            return "not found (no libcuda.so.1: no NVIDIA driver on this machine)"
        }
        defer { dlclose(lib) }
        typealias InitFn = @convention(c) (UInt32) -> Int32
        typealias IntOutFn = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
        guard let initSym = dlsym(lib, "cuInit"), let versionSym = dlsym(lib, "cuDriverGetVersion"),
              let countSym = dlsym(lib, "cuDeviceGetCount") else {
            return "libcuda.so.1 found but incomplete"
        }
        let cuInit = unsafeBitCast(initSym, to: InitFn.self)
        let getVersion = unsafeBitCast(versionSym, to: IntOutFn.self)
        let getCount = unsafeBitCast(countSym, to: IntOutFn.self)
        var version: Int32 = 0, count: Int32 = 0
        _ = getVersion(&version)
        let status = cuInit(0)
        guard status == 0 else { return "driver \(version / 1000).\(version % 1000 / 10) found, cuInit failed (error \(status))" }
        _ = getCount(&count)
        return "found: driver \(version / 1000).\(version % 1000 / 10), \(count) device(s)"
    }
}
