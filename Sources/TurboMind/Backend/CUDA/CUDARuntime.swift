// The process's one CUDA device as the backend sees it: the driver opened through CCUDA (dlopen;
// the binary links no CUDA), NVRTC and cuBLAS loaded, and the kernels of kernels.cu compiled for
// the device's architecture at first use and cached on disk, keyed by the source's hash, the
// architecture and the driver and NVRTC versions.
import CCUDA
import Foundation

/// Why CUDA cannot be used, or what failed on the device.
public enum CUDAError: Error, CustomStringConvertible, Equatable, Sendable {
    /// No driver, no GPU, or NVRTC/cuBLAS missing: `--device cuda` cannot run here.
    case unavailable(String)
    /// A call on the device failed (out of memory, a failed launch, a compile error).
    case failed(String)

    public var description: String {
        switch self {
        case let .unavailable(why): return "CUDA is not available: \(why)"
        case let .failed(why): return "CUDA: \(why)"
        }
    }
}

/// Throws the shim's message when `rc` is not 0.
@inline(__always) func cudaCheck(_ rc: Int32, _ what: @autoclosure () -> String = "") throws {
    if rc != 0 {
        let message = String(cString: ccuda_error())
        let context = what()
        throw CUDAError.failed(context.isEmpty ? message : "\(context): \(message)")
    }
}

/// One argument of a kernel launch (each is passed by address, as cuLaunchKernel takes them).
enum KernelArgument {
    case pointer(ccuda_ptr)
    case int(Int32)
    case long(Int64)
    case float(Float)
}

/// The compiled kernel module and its functions.
final class CUDAKernels: @unchecked Sendable {
    private let module: UnsafeMutableRawPointer
    private var functions: [String: UnsafeMutableRawPointer] = [:]
    private let lock = NSLock()
    /// Where the cubin came from: "compiled in 1.2 s" or "cached at PATH".
    let origin: String

    init(source: String, arch: Int, cacheDirectory: URL?) throws {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325   // FNV-1a over the source and what the cubin depends on
        for byte in "\(source)|sm_\(arch)|driver \(ccuda_driver_version())|nvrtc \(ccuda_nvrtc_version())".utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        let name = String(format: "kernels-%016llx-sm%d.cubin", hash, arch)
        let cached = cacheDirectory?.appendingPathComponent(name)
        var image: [UInt8]
        var origin: String
        if let cached, let data = try? Data(contentsOf: cached), data.count > 16 {
            image = [UInt8](data)
            origin = "cached at \(cached.path)"
        } else {
            let started = Date()
            var cubin: UnsafeMutableRawPointer?
            var size = 0
            try cudaCheck(ccuda_compile(source, "kernels.cu", Int32(arch), &cubin, &size))
            image = [UInt8](UnsafeRawBufferPointer(start: cubin, count: size))
            free(cubin)
            origin = String(format: "compiled by NVRTC in %.1f s", Date().timeIntervalSince(started))
            if let cached, let dir = cacheDirectory {
                // A cache that cannot be written only costs a compile next time.
                do {
                    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                    try image.withUnsafeBytes { bytes in try OutputFile.replace(cached) { try $0.write(bytes) } }
                    origin += ", cached at \(cached.path)"
                } catch {
                    origin += " (not cached: \(error))"
                }
            }
        }
        var module: UnsafeMutableRawPointer?
        try image.withUnsafeBytes { try cudaCheck(ccuda_load_module($0.baseAddress, &module), "loading the kernel module") }
        self.module = module!
        self.origin = origin
    }

    func function(_ name: String) throws -> UnsafeMutableRawPointer {
        lock.lock()
        defer { lock.unlock() }
        if let f = functions[name] { return f }
        var f: UnsafeMutableRawPointer?
        try cudaCheck(ccuda_get_function(module, name, &f))
        functions[name] = f!
        return f!
    }

    /// Enqueues `name` on the stream with grid (x, y, z) of blocks of `threads`.
    func launch(_ name: String, grid: (Int, Int, Int), threads: Int, shared: Int = 0, _ args: [KernelArgument]) throws {
        try launch(function(name), name: name, grid: grid, threads: threads, shared: shared, args)
    }

    /// Enqueues a resolved kernel. The arguments are packed on the stack: a decode step launches
    /// hundreds of kernels, and the host must stay ahead of the GPU.
    func launch(_ f: UnsafeMutableRawPointer, name: @autoclosure () -> String, grid: (Int, Int, Int), threads: Int, shared: Int = 0,
                _ args: [KernelArgument]) throws {
        let rc = withUnsafeTemporaryAllocation(byteCount: 8 * max(args.count, 1), alignment: 8) { storage -> Int32 in
            withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer?.self, capacity: max(args.count, 1)) { params -> Int32 in
                let base = storage.baseAddress!
                for (i, a) in args.enumerated() {
                    let p = base + 8 * i
                    switch a {
                    case let .pointer(v): p.storeBytes(of: v, as: UInt64.self)
                    case let .int(v): p.storeBytes(of: v, as: Int32.self)
                    case let .long(v): p.storeBytes(of: v, as: Int64.self)
                    case let .float(v): p.storeBytes(of: v, as: Float.self)
                    }
                    params[i] = p
                }
                return ccuda_launch(f, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2), UInt32(threads), 1, 1, UInt32(shared),
                                    params.baseAddress)
            }
        }
        try cudaCheck(rc, "launching \(name())")
    }
}

/// Facts about the opened device, and the opening itself (once per process).
public enum CUDARuntime {
    public struct Device: Sendable {
        public var name: String
        public var computeCapability: Int
        public var multiprocessors: Int
        public var driverVersion: Int
        public var deviceCount: Int
        public var free: Int
        public var total: Int
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var driverResult: Result<Device, CUDAError>?
    nonisolated(unsafe) private static var computeResult: Result<Void, CUDAError>?

    /// The driver and device 0, or why not. Cheap after the first call.
    public static func device() -> Result<Device, CUDAError> {
        lock.lock()
        defer { lock.unlock() }
        if let driverResult { return driverResult }
        let r: Result<Device, CUDAError>
        if ccuda_open(0) != 0 {
            r = .failure(.unavailable(String(cString: ccuda_error())))
        } else {
            var free = 0, total = 0
            _ = ccuda_mem_info(&free, &total)
            r = .success(Device(name: String(cString: ccuda_device_name()), computeCapability: Int(ccuda_compute_capability()),
                                multiprocessors: Int(ccuda_multiprocessors()), driverVersion: Int(ccuda_driver_version()),
                                deviceCount: Int(ccuda_device_count()), free: free, total: total))
        }
        driverResult = r
        return r
    }

    /// The driver plus NVRTC and cuBLAS: what the backend needs.
    public static func openCompute() throws -> Device {
        let d = try device().get()
        lock.lock()
        defer { lock.unlock() }
        if computeResult == nil {
            computeResult = ccuda_open_compute() == 0 ? .success(()) : .failure(.unavailable(String(cString: ccuda_error())))
        }
        try computeResult!.get()
        return d
    }

    /// Whether an NVIDIA driver is installed (libcuda.so.1 loads), usable or not: `auto` falling back
    /// to the CPU is worth a notice only then.
    public static var driverPresent: Bool {
        if case let .failure(error) = device(), case let .unavailable(why) = error, why.contains("libcuda.so.1") { return false }
        return true
    }

    /// Compiles the embedded kernels for sm_`arch` with NVRTC alone (no GPU needed) and returns the
    /// cubin's size, or why not: lets machines without a GPU check that kernels.cu compiles.
    public static func compileKernels(arch: Int) throws -> Int {
        guard ccuda_open_nvrtc() == 0 else { throw CUDAError.unavailable(String(cString: ccuda_error())) }
        var cubin: UnsafeMutableRawPointer?
        var size = 0
        try cudaCheck(ccuda_compile(kernelSource, "kernels.cu", Int32(arch), &cubin, &size))
        free(cubin)
        return size
    }

    /// Whether NVRTC can be loaded here (with or without a GPU).
    public static var nvrtcPresent: Bool { ccuda_open_nvrtc() == 0 }

    /// Libraries found, one per line (check-env).
    public static var libraries: String { String(cString: ccuda_libraries()) }
    public static var nvrtcVersion: Int { Int(ccuda_nvrtc_version()) }
    public static var cublasVersion: Int { Int(ccuda_cublas_version()) }

    /// Where compiled kernels are kept: $LMDEPLOY_CUDA_CACHE, else ~/.cache/lmdeploy-swift/cuda-kernels.
    public static var kernelCacheDirectory: URL {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["LMDEPLOY_CUDA_CACHE"], !dir.isEmpty { return URL(fileURLWithPath: dir) }
        let base = env["XDG_CACHE_HOME"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache")
        return base.appendingPathComponent("lmdeploy-swift/cuda-kernels")
    }

    /// The kernel source embedded in the binary, or the file $LMDEPLOY_CUDA_KERNELS names: lets a kernel
    /// change be checked (selftest) and timed on the device without rebuilding the binary. A file that
    /// cannot be read is an error, never a silent fallback to the embedded source.
    static func kernelSourceText(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        if let path = environment["LMDEPLOY_CUDA_KERNELS"], !path.isEmpty {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw CUDAError.failed("LMDEPLOY_CUDA_KERNELS: cannot read '\(path)'")
            }
            return String(decoding: data, as: UTF8.self)
        }
        return kernelSource
    }
    static var kernelSource: String { String(decoding: PackageResources.kernels_cu, as: UTF8.self) }

    nonisolated(unsafe) private static var kernelsResult: Result<CUDAKernels, Error>?

    /// The kernels, compiled or read from the cache once per process.
    static func kernels(arch: Int) throws -> CUDAKernels {
        lock.lock()
        defer { lock.unlock() }
        if kernelsResult == nil {
            kernelsResult = Result { try CUDAKernels(source: try kernelSourceText(), arch: arch, cacheDirectory: kernelCacheDirectory) }
        }
        return try kernelsResult!.get()
    }
}
