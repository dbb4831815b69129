/// The post-processors of Hugging Face `tokenizer.json` implemented here, for single sequences:
/// they add special tokens (BOS, CLS/SEP…) around the encoded ids when asked to.
indirect enum PostProcessor: Sendable {
    enum Item: Sendable {
        case sequence
        case special([Int])
    }

    case sequence([PostProcessor])
    /// `TemplateProcessing`: the `single` template, with its special tokens resolved to ids.
    case template([Item])
    /// `ByteLevel` (offsets trimming only) and `RobertaProcessing`/`BertProcessing` reduce to a
    /// template too; ByteLevel adds nothing.
    case none

    static func load(_ field: JSONField) throws(TokenizerError) -> PostProcessor? {
        if field.isNull { return nil }
        let type = try field.child("type").string()
        switch type {
        case "Sequence":
            var list: [PostProcessor] = []
            for item in try field.child("processors").array() {
                if let p = try load(item) { list.append(p) }
            }
            return .sequence(list)
        case "ByteLevel":
            return PostProcessor.none
        case "TemplateProcessing":
            return .template(try loadTemplate(field))
        case "BertProcessing", "RobertaProcessing":
            func pair(_ name: String) throws(TokenizerError) -> Int {
                let items = try field.child(name).array()
                guard items.count == 2 else { throw field.child(name).error("a [token, id] pair") }
                return try items[1].int()
            }
            return .template([.special([try pair("cls")]), .sequence, .special([try pair("sep")])])
        default:
            throw TokenizerError.unsupported(
                file: field.file, component: "post-processor",
                detail: "type '\(type)' at '\(field.path)' (supported: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence)")
        }
    }

    private static func loadTemplate(_ field: JSONField) throws(TokenizerError) -> [Item] {
        // Special tokens by name → ids.
        var specials: [String: [Int]] = [:]
        let specialField = field.child("special_tokens")
        if !specialField.isNull {
            for (name, entry) in try specialField.entries() {
                specials[name] = try entry.child("ids").array().map { (f: JSONField) throws(TokenizerError) -> Int in try f.int() }
            }
        }
        func special(_ name: String, _ at: JSONField) throws(TokenizerError) -> Item {
            guard let ids = specials[name] else {
                throw at.error("a special token listed in special_tokens ('\(name)' is not)")
            }
            return .special(ids)
        }
        let single = field.child("single")
        var items: [Item] = []
        if let value = single.value, case let .string(text) = value {
            // The string form: "<s> $A" (`$A`, `$0`, `$`, with an optional `:type_id`).
            for word in text.split(separator: " ") {
                let name = word.split(separator: ":", maxSplits: 1).first.map(String.init) ?? String(word)
                if name.hasPrefix("$") {
                    guard ["$", "$A", "$0"].contains(name) else {
                        throw single.error("a single-sequence template (it refers to '\(name)')")
                    }
                    items.append(.sequence)
                } else {
                    items.append(try special(name, single))
                }
            }
            return items
        }
        for item in try single.array() {
            let seq = item.child("Sequence")
            if !seq.isNull {
                let id = try seq.child("id").string()
                guard id == "A" else { throw seq.child("id").error("\"A\" in a single-sequence template") }
                items.append(.sequence)
                continue
            }
            let tok = item.child("SpecialToken")
            guard !tok.isNull else { throw item.error("{\"Sequence\": …} or {\"SpecialToken\": …}") }
            items.append(try special(try tok.child("id").string(), tok.child("id")))
        }
        return items
    }

    func process(_ ids: [Int]) -> [Int] {
        switch self {
        case let .sequence(list):
            return list.reduce(ids) { $1.process($0) }
        case let .template(items):
            var out: [Int] = []
            out.reserveCapacity(ids.count + items.count)
            for item in items {
                switch item {
                case .sequence: out.append(contentsOf: ids)
                case let .special(s): out.append(contentsOf: s)
                }
            }
            return out
        case .none:
            return ids
        }
    }
}
