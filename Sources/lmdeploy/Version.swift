enum LMDeployVersion {
    /// The version of lmdeploy whose command line and formats this release follows, and ours.
    static let string = "0.1.0 (lmdeploy-swift; command line and formats of lmdeploy 0.1)"
}
