// Running the application until SIGINT/SIGTERM: stop accepting, give running requests a grace
// period to finish, then cancel what is left (which cancels their generations) and return.
import Hummingbird
import Logging
import ServiceLifecycle
import UnixSignals

public enum Server {
    /// How long running requests may take to finish after a shutdown signal.
    public static let gracePeriod: Duration = .seconds(30)

    public static func run(_ app: some ApplicationProtocol, logger: Logger) async throws {
        var configuration = ServiceGroupConfiguration(services: [.init(service: app)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = gracePeriod
        configuration.maximumCancellationDuration = .seconds(5)
        try await ServiceGroup(configuration: configuration).run()
    }
}
