// Deadlines on each connection that Hummingbird does not enforce itself, so that a slow or
// stalled peer cannot hold a connection (and the generation behind it) forever:
//   * a request must arrive whole (head and body) within `requestTimeout` of its first part:
//     a client that sends half a request and stops, or trickles its body, is disconnected;
//   * a response must keep moving: when the client stops reading and the connection stays
//     unwritable for `stallTimeout`, it is closed, which cancels its generation (Streaming.watch).
// A connection that sends nothing at all (slowloris heads included: bytes that never make a
// request head) is closed by Hummingbird's idle timeout, set beside this handler.
import Logging
import NIOCore
import NIOHTTPTypes

final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let requestTimeout: TimeAmount
    private let stallTimeout: TimeAmount
    private let logger: Logger
    private var requestDeadline: Scheduled<Void>?
    private var stallDeadline: Scheduled<Void>?

    init(requestTimeout: TimeAmount, stallTimeout: TimeAmount, logger: Logger) {
        self.requestTimeout = requestTimeout
        self.stallTimeout = stallTimeout
        self.logger = logger
    }

    /// The kernel's send buffer per connection, bounded so that a client that stops reading is
    /// noticed (the channel turns unwritable) after a few hundred KiB rather than megabytes of
    /// autotuned buffer; ample for streams of small events.
    static let sendBufferBytes = 256 << 10

    func handlerAdded(context: ChannelHandlerContext) {
        try? context.channel.syncOptions?.setOption(ChannelOptions.socketOption(.so_sndbuf), value: SocketOptionValue(ConnectionGuard.sendBufferBytes))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            requestDeadline?.cancel()
            requestDeadline = close(context, after: requestTimeout, "whose request did not arrive whole", flag: "--request-timeout")
        case .end:
            requestDeadline?.cancel()
            requestDeadline = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            stallDeadline?.cancel()
            stallDeadline = nil
        } else if stallDeadline == nil {
            stallDeadline = close(context, after: stallTimeout, "that left its response unread", flag: "--write-timeout")
        }
        context.fireChannelWritabilityChanged()
    }

    /// Closes the connection after `delay` unless the returned task is cancelled first.
    private func close(_ context: ChannelHandlerContext, after delay: TimeAmount, _ what: String, flag: String) -> Scheduled<Void> {
        let channel = context.channel
        let logger = self.logger
        return context.eventLoop.scheduleTask(in: delay) {
            logger.notice("closing a connection \(what) within \(delay.nanoseconds / 1_000_000_000) s (\(flag))",
                          metadata: ["peer": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"])
            channel.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelDeadlines()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { cancelDeadlines() }

    private func cancelDeadlines() {
        requestDeadline?.cancel()
        requestDeadline = nil
        stallDeadline?.cancel()
        stallDeadline = nil
    }
}
