"""The language front end: source text and spans, the parser and its curated syntax
messages, the AST, constant evaluation, the checker and the formatter. No torch."""
