// Compiled only into the fuzz build's TurboMind subset (the parser files; Scripts/fuzz lists them).
// ModelConfig.load(file:) names a read failure with WorkspaceWriter.swift's systemMessage, and
// that file pulls in the whole engine; the fuzz targets parse bytes and never reach a read
// failure, so the subset gets the error's own description instead.
import Foundation

func systemMessage(_ error: Error) -> String { "\(error)" }
