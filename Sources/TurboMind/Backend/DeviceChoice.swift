// Which backend an engine runs on (`--device cpu|cuda|auto`). `auto` takes CUDA when the driver, a
// GPU, NVRTC and cuBLAS are all found, else the CPU; `cuda` where any of them is missing is an
// error naming what is missing.

public enum DeviceChoice: String, Sendable, Equatable, CaseIterable {
    case cpu, cuda, auto

    /// The backend chosen, with a note when `auto` fell back to the CPU.
    public enum Resolved {
        case cpu(note: String?)
        case cuda(CUDABackend)
    }

    public func resolve() throws -> Resolved {
        switch self {
        case .cpu:
            return .cpu(note: nil)
        case .cuda:
            return .cuda(try CUDABackend())
        case .auto:
            do {
                return .cuda(try CUDABackend())
            } catch {
                return .cpu(note: "--device auto: using the CPU (\(error))")
            }
        }
    }
}
