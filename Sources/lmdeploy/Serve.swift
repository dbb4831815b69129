// `lmdeploy serve api_server MODEL` and `lmdeploy serve api_client URL`: flags only; the server
// and the client are the Serve library's.
import ArgumentParser
import Foundation
import Logging
import Serve
import ServiceLifecycle
import TerminalUI
import TurboMind

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a model over HTTP (OpenAI-compatible API) or talk to such a server.",
        subcommands: [APIServer.self, APIClient.self, ServeGradio.self]
    )
}

struct APIServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api_server",
        abstract: "Serve a model with an OpenAI-compatible HTTP API and lmdeploy's /v1/chat/interactive.",
        discussion: """
        Routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions (both OpenAI, streaming with \
        "stream": true), POST /v1/chat/interactive (lmdeploy's session chat), GET /health, GET /metrics \
        (Prometheus), GET /openapi.json, and at / a page to try every route in a browser.
        Example: lmdeploy serve api_server ./workspace --server-name 0.0.0.0 --server-port 23333 --instance-num 64
        then: curl http://127.0.0.1:23333/v1/chat/completions -H 'Content-Type: application/json' \\
              -d '{"messages": [{"role": "user", "content": "Hi"}]}'
        Limits: a request body of at most --max-body-bytes, n ≤ 16, at most 16 stop strings of 256 characters, \
        64 prompts per completions request, prompt + max_tokens within --session-len; beyond \
        --max-concurrent-requests generation requests wait, and beyond --max-queued-requests more (or \
        --max-requests-per-client from one address) the server answers 429 with Retry-After; a request that \
        waits --queue-timeout for KV cache gets 503 with Retry-After. Connections that stay silent \
        (--idle-timeout), send half a request (--request-timeout) or stop reading (--write-timeout) are \
        closed and their generations cancelled. SIGINT/SIGTERM stop accepting, let running requests finish \
        (30 s at most), then exit 0.
        """,
        aliases: ["api-server"]
    )

    @Argument(help: "A Hugging Face model directory or a TurboMind workspace.")
    var modelPath: String

    @Option(name: [.customLong("server-name"), .customLong("server_name")], help: "Address to listen on.")
    var serverName = "0.0.0.0"

    @Option(name: [.customLong("server-port"), .customLong("server_port")], help: "Port to listen on (0 = any free port; the port is printed).")
    var serverPort = 23333

    @Option(name: [.customLong("instance-num"), .customLong("instance_num")],
            help: "Most sequences decoded together (the engine's batch size; same as --max-batch-size). Default: config.ini's, else 64.")
    var instanceNum: Int?

    @Option(help: "Tensor parallelism: 1 (several GPUs are not supported yet).")
    var tp = 1

    @Option(name: [.customLong("model-name"), .customLong("model_name")], help: "One of lmdeploy's named chat templates (`lmdeploy list`); default: the model's own chat_template.")
    var modelName: String?

    @Option(name: [.customLong("served-model-name"), .customLong("served_model_name")],
            help: "The model id clients send as `model` and GET /v1/models lists. Default: the workspace's model_name, else the directory name.")
    var servedModelName: String?

    @Option(name: [.customLong("api-keys"), .customLong("api_keys")], parsing: .upToNextOption,
            help: "Keys clients must send as `Authorization: Bearer KEY` (every route but /health). Default: none (open).")
    var apiKeys: [String] = []

    @Option(name: [.customLong("allow-origins"), .customLong("allow_origins")], parsing: .upToNextOption, help: "Browser origins allowed by CORS (`*` = any).")
    var allowOrigins: [String] = ["*"]

    @Flag(name: [.customLong("allow-credentials"), .customLong("allow_credentials")], help: "CORS: allow credentials.")
    var allowCredentials = false

    @Option(name: [.customLong("allow-methods"), .customLong("allow_methods")], parsing: .upToNextOption, help: "CORS: allowed methods (`*` = GET, POST, OPTIONS).")
    var allowMethods: [String] = ["*"]

    @Option(name: [.customLong("allow-headers"), .customLong("allow_headers")], parsing: .upToNextOption, help: "CORS: allowed request headers (`*` = any).")
    var allowHeaders: [String] = ["*"]

    @Option(name: [.customLong("log-level"), .customLong("log_level")], help: "CRITICAL, ERROR, WARNING, INFO or DEBUG.")
    var logLevel = "INFO"

    @OptionGroup(title: "Limits and timeouts") var limits: ServerLimitOptions

    @OptionGroup var engineOptions: EngineOptions

    func validate() throws {
        guard (0...65535).contains(serverPort) else { throw ValidationError("--server-port must be in 0…65535 (0 = any free port), got \(serverPort)") }
        guard tp == 1 else { throw ValidationError("--tp \(tp): tensor parallelism over several GPUs is not supported yet; use --tp 1") }
        if let instanceNum, instanceNum < 1 { throw ValidationError("--instance-num must be at least 1, got \(instanceNum)") }
        guard logLevelValue != nil else { throw ValidationError("--log-level must be CRITICAL, ERROR, WARNING, INFO or DEBUG, got \(logLevel)") }
        if apiKeys.contains(where: \.isEmpty) { throw ValidationError("--api-keys: a key must not be empty") }
    }

    private var logLevelValue: Logger.Level? {
        ["CRITICAL": .critical, "ERROR": .error, "WARNING": .warning, "WARN": .warning, "INFO": .info, "DEBUG": .debug, "TRACE": .trace][logLevel.uppercased()]
    }

    func run() async throws {
        let source = try ModelSource.load(path: modelPath)
        let format = try ChatFormat(source: source, modelName: modelName)
        var settings = engineOptions.settings
        if let instanceNum { settings.maxBatchSize = instanceNum }
        let engine = try settings.launch(source)
        defer { engine.shutdown() }
        for notice in engine.notices { Terminal.err(notice) }
        let served = servedModelName ?? source.workspace?.modelName ?? source.directory.lastPathComponent
        var options = ServerOptions(
            host: serverName, port: serverPort, modelName: served, apiKeys: apiKeys,
            cors: CORSPolicy(allowOrigins: allowOrigins, allowCredentials: allowCredentials, allowMethods: allowMethods, allowHeaders: allowHeaders))
        limits.apply(to: &options)
        var logger = Logger(label: "lmdeploy.serve")
        logger.logLevel = logLevelValue ?? .info
        let context = ServeContext(engine: engine, format: format, options: options)
        let host = serverName, backend = engine.backendDescription, sessionLen = engine.config.sessionLen
        let app = buildApplication(context: context, logger: logger) { port in
            Terminal.err("serving \(served) on \(backend), session length \(sessionLen), at http://\(host):\(port) (API page at /, OpenAPI at /openapi.json)")
        }
        try await Server.run(app, logger: logger)
        Terminal.err("server stopped")
    }
}

struct APIClient: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api_client",
        abstract: "Chat in the terminal with a running api_server (over /v1/chat/interactive).",
        discussion: """
        The same prompt as `lmdeploy chat`: finish a message with an empty line; `end` starts a new session, \
        `exit` (or Ctrl-D) quits, Ctrl-C stops a reply. The server keeps the session's history.
        """,
        aliases: ["api-client"]
    )

    @Argument(help: "The server's URL, e.g. http://127.0.0.1:23333")
    var url: String

    @Option(name: [.customLong("session-id"), .customLong("session_id")], help: "The session to use (default: a random one).")
    var sessionID: Int?

    @Option(name: [.customLong("api-key"), .customLong("api_key")], help: "Sent as `Authorization: Bearer KEY`.")
    var apiKey: String?

    @Option(name: [.customLong("max-new-tokens"), .customLong("max_new_tokens"), .customLong("request-output-len"), .customLong("request_output_len")],
            help: "Maximum tokens of one reply.")
    var maxNewTokens = 512

    @Option(help: "Sampling temperature (0 = greedy).")
    var temperature: Double = 0.8

    func run() async throws {
        let client = try InteractiveClient(url: url, sessionID: sessionID ?? Int.random(in: 1...(1 << 30)), apiKey: apiKey)
        try await TerminalChat.run(client: client, maxNewTokens: maxNewTokens, temperature: temperature)
        await client.shutdown()
    }
}
