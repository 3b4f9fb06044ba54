"""One module per CLI command; each defines ``make_parser()``-free ``main(argv)`` via ``llmrec.config``.

A command module exposes ``HELP`` (one line for ``llmrec --help``) and ``main(argv: list[str]) -> int``.
Heavy imports (torch, transformers) happen inside ``main`` so ``llmrec --help`` stays instant.
"""
