// GET /openapi.json: OpenAPI 3.1 of every route, built from the schemas the request and response
// types declare next to their coding keys (and the limits this server enforces).
import Foundation

extension ServeContext {
    var openAPIDocument: Data { (try? JSONEncoder.api.encode(OpenAPIDocument.make(options: options))) ?? Data("{}".utf8) }
}

enum OpenAPIDocument {
    static let errorSchema = Schema.object([
        ("error", Schema.object([
            ("message", Schema.string("What went wrong, and what to do.")),
            ("type", Schema.string("`invalid_request_error`, `server_error` or `server_overloaded`.")),
            ("param", Schema.nullable(Schema.string("The field at fault."))),
            ("code", Schema.nullable(Schema.string("A stable machine-readable code."))),
        ], required: ["message", "type"])),
    ], required: ["error"])

    /// One server-sent event as schemathesis and OpenAPI tools parse a text/event-stream body.
    static func sseEvent(_ description: String) -> JSONDoc {
        Schema.object([
            ("data", Schema.string(description)),
            ("event", Schema.string("The event type (absent: `message`).")),
            ("id", Schema.string("Event id (not sent).")),
            ("retry", Schema.integer("Reconnection delay (not sent).")),
        ], required: ["data"], description: "One event of the stream.")
    }

    static func make(options: ServerOptions) -> JSONDoc {
        let limits = options.limits
        let schemas: [(String, JSONDoc)] = [
            ("ChatCompletionRequest", ChatCompletionRequest.schema(limits)),
            ("ChatCompletion", ChatCompletion.schema),
            ("ChatCompletionChunk", ChatCompletionChunk.schema),
            ("CompletionRequest", CompletionRequest.schema(limits)),
            ("Completion", Completion.schema),
            ("InteractiveRequest", InteractiveRequest.schema),
            ("InteractiveResponse", InteractiveResponse.schema),
            ("ModelList", ModelList.schema),
            ("Error", errorSchema),
        ]
        var info: [(String, JSONDoc)] = [
            ("title", .string("lmdeploy-swift api_server")),
            ("version", .string("1.0")),
            ("description", .string("OpenAI-compatible API and lmdeploy's /v1/chat/interactive, serving `\(options.modelName)`. Limits: body ≤ \(limits.maxBodyBytes) bytes, n ≤ \(limits.maxChoices), ≤ \(limits.maxStopWords) stop strings of ≤ \(limits.maxStopWordLength) characters, ≤ \(limits.maxPrompts) prompts per completions request, \(options.maxConcurrentRequests) generation requests at once with \(options.maxQueuedRequests) queued and \(options.maxRequestsPerClient) per client address (then 429 with Retry-After), \(options.maxSessions) open interactive sessions (\(options.maxSessionsPerClient) per client; then 429), \(options.queueTimeout.components.seconds) s of waiting for KV cache (then 503 with Retry-After); connections idle for \(options.timeouts.idle.components.seconds) s, sending a request for more than \(options.timeouts.request.components.seconds) s or leaving a response unread for \(options.timeouts.write.components.seconds) s are closed.")),
        ]
        info.append(("license", .object([("name", .string("Apache-2.0"))])))
        var doc: [(String, JSONDoc)] = [
            ("openapi", .string("3.1.0")),
            ("info", .object(info)),
            ("paths", .object(paths(secured: !options.apiKeys.isEmpty))),
        ]
        var components: [(String, JSONDoc)] = [("schemas", .object(schemas))]
        if !options.apiKeys.isEmpty {
            components.append(("securitySchemes", .object([("bearerAuth", .object([("type", .string("http")), ("scheme", .string("bearer"))]))])))
            doc.append(("security", .array([.object([("bearerAuth", .array([]))])])))
        }
        doc.append(("components", .object(components)))
        return .object(doc)
    }

    private static func content(_ types: [(String, JSONDoc)]) -> JSONDoc {
        .object(types.map { ($0.0, .object([("schema", $0.1)])) })
    }

    private static func response(_ description: String, _ types: [(String, JSONDoc)] = []) -> JSONDoc {
        var f: [(String, JSONDoc)] = [("description", .string(description))]
        if !types.isEmpty { f.append(("content", content(types))) }
        return .object(f)
    }

    private static func withLinks(_ response: JSONDoc, _ links: [(String, JSONDoc)]) -> JSONDoc {
        guard case .object(var fields) = response else { return response }
        fields.append(("links", .object(links)))
        return .object(fields)
    }

    private static var errorContent: [(String, JSONDoc)] { [("application/json", Schema.ref("Error"))] }

    private static func errors(_ codes: [(String, String)], secured: Bool) -> [(String, JSONDoc)] {
        var all = codes
        if secured { all.append(("401", "Missing or wrong API key.")) }
        return all.map { ($0.0, response($0.1, errorContent)) }
    }

    private static func get(_ summary: String, _ ok: JSONDoc, secured: Bool, open: Bool = false) -> JSONDoc {
        var op: [(String, JSONDoc)] = [("summary", .string(summary)),
                                       ("responses", .object([("200", ok)] + errors([], secured: secured && !open)))]
        if open { op.append(("security", .array([]))) }
        return .object([("get", .object(op))])
    }

    private static func post(_ operationID: String, _ summary: String, request: String, ok: JSONDoc, secured: Bool) -> JSONDoc {
        let errorCodes = [
            ("400", "Malformed JSON, a field of the wrong type or out of range, or a prompt longer than the session."),
            ("404", "Unknown model."),
            ("413", "The body is larger than the limit."),
            ("429", "Too many requests running and queued, too many from this client, or too many open sessions; see Retry-After."),
            ("503", "The server is shutting down, or the request waited --queue-timeout for room in the KV cache; see Retry-After."),
        ]
        let op: [(String, JSONDoc)] = [
            ("operationId", .string(operationID)),
            ("summary", .string(summary)),
            ("requestBody", .object([("required", .bool(true)), ("content", content([("application/json", Schema.ref(request))]))])),
            ("responses", .object([("200", ok)] + errors(errorCodes, secured: secured))),
        ]
        return .object([("post", .object(op))])
    }

    static func paths(secured: Bool) -> [(String, JSONDoc)] {
        [
            ("/v1/models", get("The served model.", response("The model list.", [("application/json", Schema.ref("ModelList"))]), secured: secured)),
            ("/v1/chat/completions", post("createChatCompletion", "Chat completion (OpenAI).", request: "ChatCompletionRequest",
                                          ok: response("The answer; with `stream`, server-sent events of ChatCompletionChunk ending with `data: [DONE]`.",
                                                       [("application/json", Schema.ref("ChatCompletion")),
                                                        ("text/event-stream", sseEvent("A ChatCompletionChunk as JSON, or `[DONE]` at the end."))]),
                                          secured: secured)),
            ("/v1/completions", post("createCompletion", "Text completion (OpenAI).", request: "CompletionRequest",
                                     ok: response("The answer; with `stream`, server-sent events of Completion chunks ending with `data: [DONE]`.",
                                                  [("application/json", Schema.ref("Completion")),
                                                   ("text/event-stream", sseEvent("A Completion chunk as JSON, or `[DONE]` at the end."))]),
                                     secured: secured)),
            ("/v1/chat/interactive", post("chatInteractive", "lmdeploy's session chat: the server keeps the history.", request: "InteractiveRequest",
                                          ok: withLinks(response("The answer; with `stream`, one InteractiveResponse JSON object per line.",
                                                                 [("application/json", Schema.ref("InteractiveResponse")),
                                                                  ("application/x-ndjson", Schema.string("One InteractiveResponse JSON object per line."))]),
                                                        // The same request again is the session's next turn (stateful testing follows it).
                                                        [("NextTurn", .object([("operationId", .string("chatInteractive")), ("requestBody", .string("$request.body")),
                                                                              ("description", .string("Another turn of the same session."))]))]),
                                          secured: secured)),
            ("/health", get("Liveness: 200 while the server runs (no key needed).", response("Alive."), secured: secured, open: true)),
            ("/metrics", get("Prometheus metrics.", response("Text exposition format.", [("text/plain", Schema.string("Prometheus text."))]), secured: secured)),
            ("/openapi.json", get("This document.", response("OpenAPI 3.1.", [("application/json", .object([("type", .string("object"))]))]), secured: secured)),
            ("/", get("The interactive API page.", response("HTML.", [("text/html", Schema.string("The page."))]), secured: secured)),
            ("/api-page.js", get("The API page's script.", response("JavaScript.", [("text/javascript", Schema.string("The script."))]), secured: secured)),
        ]
    }
}
