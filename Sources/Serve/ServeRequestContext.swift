// The request context of every route: Hummingbird's core context plus the connection's channel,
// whose close (the client went away) cancels the request's generation.
import Hummingbird
import NIOCore

public struct ServeRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
