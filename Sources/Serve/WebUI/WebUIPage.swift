// The chat page's files (chat.html, chat.css, chat.js next to this file), embedded in the binary:
// no CDN, no fonts from elsewhere, works offline. The policy forbids inline script and style and
// any load from another origin, so even text that slipped into the DOM as markup could not run.
import Hummingbird

struct WebUIAsset: Sendable {
    var path: String
    var contentType: String
    var bytes: [UInt8]

    var response: Response {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        headers[.contentSecurityPolicy] = WebUIPage.contentSecurityPolicy
        headers[.xContentTypeOptions] = "nosniff"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

enum WebUIPage {
    static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static let assets = [
        WebUIAsset(path: "/", contentType: "text/html; charset=utf-8", bytes: PackageResources.chat_html),
        WebUIAsset(path: "/chat.css", contentType: "text/css; charset=utf-8", bytes: PackageResources.chat_css),
        WebUIAsset(path: "/chat.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.chat_js),
    ]
}
