// `lmdeploy serve gradio MODEL|URL`: the chat web page, over the engine in this process or over
// an api_server. Flags only; the page and its server are the Serve library's (WebUI/).
import ArgumentParser
import Foundation
import Logging
import Serve
import TerminalUI
import TurboMind

struct ServeGradio: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gradio",
        abstract: "Serve a chat web page: over a model run in this process, or over a running api_server.",
        discussion: """
        lmdeploy served this page with Gradio; this is its own self-contained page (no CDN: it works offline) \
        with streamed answers, Cancel, Reset, the sampling settings and a system prompt. Each browser tab is \
        its own session, whose KV cache is kept between its turns.
        Local mode (a model directory or workspace): the engine runs here; the engine flags below apply.
        Restful mode (an http:// URL): the page's turns go to that api_server's /v1/chat/interactive, \
        with --api-key if it needs one.
        Examples:
          lmdeploy serve gradio ./workspace --server-name 0.0.0.0 --server-port 6006
          lmdeploy serve gradio http://127.0.0.1:23333 --server-port 6006 --restful-api True
        The page has no login: on an address others can reach, anyone there can chat (and, in restful \
        mode, use the api_server's key through it).
        """
    )

    @Argument(help: "A Hugging Face model directory or a TurboMind workspace (local mode), or an api_server's URL such as http://127.0.0.1:23333 (restful mode).")
    var modelPathOrServer: String

    @Option(name: [.customLong("server-name"), .customLong("server_name")], help: "Address to listen on (0.0.0.0 = every interface).")
    var serverName = "127.0.0.1"

    @Option(name: [.customLong("server-port"), .customLong("server_port")], help: "Port to listen on (0 = any free port; the address is printed).")
    var serverPort = 6006

    @Option(name: [.customLong("restful-api"), .customLong("restful_api")],
            help: "True: the argument is an api_server's URL; False: a model to run here. Default: True exactly when the argument is an http(s):// URL.")
    var restfulAPI: String?

    @Option(name: [.customLong("api-key"), .customLong("api_key")], help: "Restful mode: sent to the api_server as `Authorization: Bearer KEY`.")
    var apiKey: String?

    @Option(help: "Tensor parallelism: 1 (several GPUs are not supported yet).")
    var tp = 1

    @Option(name: [.customLong("batch-size"), .customLong("batch_size"), .customLong("instance-num"), .customLong("instance_num")],
            help: "Local mode: most sequences decoded together (same as --max-batch-size). Default: config.ini's, else 64.")
    var batchSize: Int?

    @Option(name: [.customLong("model-name"), .customLong("model_name")], help: "Local mode: one of lmdeploy's named chat templates (`lmdeploy list`); default: the model's own chat_template.")
    var modelName: String?

    @Option(name: [.customLong("served-model-name"), .customLong("served_model_name")],
            help: "Local mode: the model name the page shows. Default: the workspace's model_name, else the directory name.")
    var servedModelName: String?

    @OptionGroup(title: "Limits and timeouts (the limits apply to a model run here)") var limits: ServerLimitOptions

    @Option(name: [.customLong("log-level"), .customLong("log_level")], help: "CRITICAL, ERROR, WARNING, INFO or DEBUG.")
    var logLevel = "INFO"

    @OptionGroup var engineOptions: EngineOptions

    /// Restful mode or not, from --restful-api and the argument's form.
    var restful: Bool {
        get throws {
            let isURL = modelPathOrServer.hasPrefix("http://") || modelPathOrServer.hasPrefix("https://")
            guard let restfulAPI else { return isURL }
            guard let flag = ["true": true, "1": true, "yes": true, "false": false, "0": false, "no": false][restfulAPI.lowercased()] else {
                throw ValidationError("--restful-api must be True or False, got '\(restfulAPI)'")
            }
            if flag && !isURL {
                throw ValidationError("--restful-api True needs the api_server's URL (e.g. http://127.0.0.1:23333), got '\(modelPathOrServer)'")
            }
            if !flag && isURL {
                throw ValidationError("--restful-api False runs a model here, but '\(modelPathOrServer)' is a URL: pass a model directory or workspace, or --restful-api True")
            }
            return flag
        }
    }

    /// Flags that only mean something with the engine in this process.
    private var localOnlyFlagsGiven: [String] {
        var given: [String] = []
        let e = engineOptions
        if e.sessionLen != nil { given.append("--session-len") }
        if e.maxBatchSize != nil { given.append("--max-batch-size") }
        if e.maxPrefillTokenNum != nil { given.append("--max-prefill-token-num") }
        if e.cacheMaxEntryCount != nil { given.append("--cache-max-entry-count") }
        if e.cacheBlockSeqLen != nil { given.append("--cache-block-seq-len") }
        if e.quantPolicy != nil { given.append("--quant-policy") }
        if e.kvParams != nil { given.append("--kv-params") }
        if e.threads != 0 { given.append("--threads") }
        if e.device != "auto" { given.append("--device") }
        if batchSize != nil { given.append("--batch-size") }
        if modelName != nil { given.append("--model-name") }
        if servedModelName != nil { given.append("--served-model-name") }
        return given
    }

    func validate() throws {
        guard (0...65535).contains(serverPort) else { throw ValidationError("--server-port must be in 0…65535 (0 = any free port), got \(serverPort)") }
        guard tp == 1 else { throw ValidationError("--tp \(tp): tensor parallelism over several GPUs is not supported yet; use --tp 1") }
        guard logLevelValue != nil else { throw ValidationError("--log-level must be CRITICAL, ERROR, WARNING, INFO or DEBUG, got \(logLevel)") }
        if try restful {
            let given = localOnlyFlagsGiven
            guard given.isEmpty else {
                throw ValidationError("\(given.joined(separator: ", ")): only for a model run here; in restful mode the api_server at \(modelPathOrServer) has its own settings")
            }
            if apiKey?.isEmpty == true { throw ValidationError("--api-key must not be empty") }
        } else {
            if apiKey != nil { throw ValidationError("--api-key is the key of an api_server (restful mode); a model run here needs none") }
            if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        }
    }

    private var logLevelValue: Logger.Level? {
        ["CRITICAL": .critical, "ERROR": .error, "WARNING": .warning, "WARN": .warning, "INFO": .info, "DEBUG": .debug, "TRACE": .trace][logLevel.uppercased()]
    }

    func run() async throws {
        var logger = Logger(label: "lmdeploy.webui")
        logger.logLevel = logLevelValue ?? .info
        let host = serverName
        if try restful {
            let forwarder: InteractiveForwarder
            do {
                forwarder = try await InteractiveForwarder.connect(url: modelPathOrServer, apiKey: apiKey)
            } catch let error as ClientError {
                throw UpstreamError(description: "\(error) (is `lmdeploy serve api_server` running there?)")
            }
            var options = ServerOptions(host: host, port: serverPort, modelName: forwarder.modelName)
            limits.apply(to: &options)
            let app = buildWebUIApplication(backend: .restful(forwarder), host: host, port: serverPort, timeouts: options.timeouts, logger: logger) { port in
                Terminal.err("chat page for \(forwarder.modelName) (api_server \(forwarder.baseURL)) at http://\(host):\(port)")
            }
            try await Server.run(app, logger: logger)
            await forwarder.shutdown()
        } else {
            let source = try ModelSource.load(path: modelPathOrServer)
            let format = try ChatFormat(source: source, modelName: modelName)
            var settings = engineOptions.settings
            if let batchSize { settings.maxBatchSize = batchSize }
            let engine = try settings.launch(source)
            defer { engine.shutdown() }
            for notice in engine.notices { Terminal.err(notice) }
            let served = servedModelName ?? source.workspace?.modelName ?? source.directory.lastPathComponent
            var options = ServerOptions(host: host, port: serverPort, modelName: served)
            limits.apply(to: &options)
            let context = ServeContext(engine: engine, format: format, options: options)
            let backend = engine.backendDescription, sessionLen = engine.config.sessionLen
            let app = buildWebUIApplication(backend: .local(context), host: host, port: serverPort, timeouts: options.timeouts, logger: logger) { port in
                Terminal.err("chat page for \(served) on \(backend), session length \(sessionLen), at http://\(host):\(port)")
            }
            try await Server.run(app, logger: logger)
        }
        Terminal.err("server stopped")
    }
}

/// The api_server of restful mode cannot be used (printed without the usage text: the flags were fine).
struct UpstreamError: Error, CustomStringConvertible {
    let description: String
}
