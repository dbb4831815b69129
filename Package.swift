// swift-tools-version: 6.0
// lmdeploy-swift: one `lmdeploy` executable over a core library. Arrows point down:
// lmdeploy (CLI) → Serve (HTTP server, client) / Lite (quantization, evaluation) → TurboMind (engine)
// → Tokenizers, CKernels, CBLAS.
import PackageDescription

let package = Package(
    name: "lmdeploy-swift",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lmdeploy", targets: ["lmdeploy"]),
        .library(name: "TurboMind", targets: ["TurboMind"]),
        .library(name: "Tokenizers", targets: ["Tokenizers"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .target(
            name: "CKernels",
            path: "Sources/CKernels",
            cSettings: [.unsafeFlags(["-O3", "-fno-math-errno"])],
            linkerSettings: [.linkedLibrary("openblas"), .linkedLibrary("pthread"), .linkedLibrary("m")]
        ),
        // CUDA through dlopen (libcuda, NVRTC, cuBLAS): builds and runs with no CUDA installed.
        .target(name: "CCUDA", path: "Sources/CCUDA", linkerSettings: [.linkedLibrary("dl"), .linkedLibrary("pthread")]),
        .target(name: "Tokenizers", path: "Sources/Tokenizers"),
        .target(
            name: "TurboMind",
            dependencies: ["CKernels", "CBLAS", "CCUDA", "Tokenizers", .product(name: "Logging", package: "swift-log")],
            path: "Sources/TurboMind",
            // The CUDA kernels' source, compiled by NVRTC at run time.
            resources: [.embedInCode("Backend/CUDA/kernels.cu")]
        ),
        .target(name: "Lite", dependencies: ["TurboMind", "Tokenizers", "CBLAS"], path: "Sources/Lite"),
        // The OpenAI-compatible HTTP server (Hummingbird) and its terminal client: no kernels, no model code.
        .target(
            name: "Serve",
            dependencies: [
                "TurboMind", "Tokenizers",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Serve",
            // The chat web page of `serve gradio`, served from the binary.
            resources: [.embedInCode("WebUI/chat.html"), .embedInCode("WebUI/chat.css"), .embedInCode("WebUI/chat.js")]
        ),
        // Generic terminal input (line editor, message reading, Ctrl-C): no engine code.
        .target(name: "TerminalUI", path: "Sources/TerminalUI"),
        .executableTarget(
            name: "lmdeploy",
            dependencies: [
                "Lite", "Serve", "TurboMind", "Tokenizers", "TerminalUI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/lmdeploy"
        ),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers"], path: "Tests/TokenizersTests"),
        .testTarget(name: "CKernelsTests", dependencies: ["CKernels"], path: "Tests/CKernelsTests"),
        .testTarget(name: "TurboMindTests", dependencies: ["TurboMind", "Tokenizers"], path: "Tests/TurboMindTests"),
        .testTarget(name: "LiteTests", dependencies: ["Lite", "TurboMind", "Tokenizers"], path: "Tests/LiteTests"),
        .testTarget(
            name: "ServeTests",
            dependencies: ["Serve", "TurboMind", "Tokenizers", .product(name: "AsyncHTTPClient", package: "async-http-client")],
            path: "Tests/ServeTests",
            exclude: ["Python"]
        ),
        .testTarget(name: "CLITests", dependencies: ["TurboMind"], path: "Tests/CLITests"),
        .testTarget(name: "TerminalUITests", dependencies: ["TerminalUI"], path: "Tests/TerminalUITests"),
    ]
)
