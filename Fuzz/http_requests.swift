// Fuzz target: the server's request bodies. The same bytes are decoded as each route's request
// (chat/completions, completions, chat/interactive — the web page's backend speaks the last) and,
// when one decodes, validated against the server's limits and turned into the engine's
// sampling settings, as the routes do. Every failure must be an APIError (a 400 naming the
// field), never a crash, a hang or an unbounded allocation.
import Foundation
@testable import Serve
@testable import TurboMind

private let limits = RequestLimits()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPRequests(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let body = Data(fuzzBytes(data, size))
    expectAPIError {
        let chat = try RequestDecoding.decode(ChatCompletionRequest.self, from: body)
        try chat.validate(limits, served: "fuzz")
        _ = chat.messages.map { $0.content?.text ?? "" }
        try checkSampling(chat.common, choices: chat.common.n ?? 1)
    }
    expectAPIError {
        let completion = try RequestDecoding.decode(CompletionRequest.self, from: body)
        try completion.validate(limits, served: "fuzz")
        try checkSampling(completion.common, choices: completion.common.n ?? 1)
    }
    expectAPIError {
        let interactive = try RequestDecoding.decode(InteractiveRequest.self, from: body)
        try interactive.validate()
    }
    return 0
}

/// The engine's own validation of what a validated request asks for: it must agree with the
/// server's (a request the server accepts is one the engine accepts).
private func checkSampling(_ common: CommonFields, choices: Int) throws {
    for i in 0..<min(choices, limits.maxChoices) {
        let config = GenerationConfig(maxNewTokens: 16, sampling: common.sampling(choice: i))
        do {
            try config.validate()
        } catch {
            fatalError("the server accepted sampling settings the engine refuses: \(error)")
        }
    }
}

private func expectAPIError(_ body: () throws -> Void) {
    do {
        try body()
    } catch is APIError {
    } catch {
        fatalError("a request failed with something other than an APIError: \(error)")
    }
}
