// Tokenizers: HF tokenizer.json BPE, streaming detokenizer, chat templates.
