// Where the chat page's turns go: the in-process engine (`serve gradio ./workspace`) or an
// api_server (`serve gradio http://host:23333`). Either way the page speaks lmdeploy's
// /v1/chat/interactive to its own origin, so both modes behave the same by construction.
import Foundation

public enum ChatBackend: Sendable {
    /// The engine in this process, through the same route handler api_server uses.
    case local(ServeContext)
    /// An api_server whose /v1/chat/interactive and /v1/models this server relays.
    case restful(InteractiveForwarder)
}

/// What the page shows about its backend (GET /webui/info).
struct WebUIInfo: Encodable, Sendable {
    var model: String
    /// `local` or `restful`.
    var mode: String
    /// The api_server's URL (restful), or the engine's backend in words (local).
    var backend: String
    /// Tokens a conversation may hold; unknown for an api_server (it does not publish it).
    var sessionLen: Int?

    enum CodingKeys: String, CodingKey { case model, mode, backend, sessionLen = "session_len" }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model)
        try c.encode(mode, forKey: .mode)
        try c.encode(backend, forKey: .backend)
        try c.encode(sessionLen, forKey: .sessionLen)
    }
}

extension ChatBackend {
    var info: WebUIInfo {
        switch self {
        case let .local(context):
            return WebUIInfo(model: context.options.modelName, mode: "local", backend: context.engine.backendDescription,
                             sessionLen: context.sessionLen)
        case let .restful(forwarder):
            return WebUIInfo(model: forwarder.modelName, mode: "restful", backend: forwarder.baseURL, sessionLen: nil)
        }
    }
}
