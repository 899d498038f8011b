"""``bptt retrieval``: how well a checkpoint's embeddings find what a query means."""
from __future__ import annotations

import click

from .common import CONTEXT, FiniteFloatRange, fail, user_errors


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path())
@click.argument("text_files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--pairs", "pairs_file", type=click.Path(dir_okay=False), default=None,
              help="A CSV file of query,document rows to use instead of paragraphs of TEXT_FILES.")
@click.option("--max-pairs", type=click.IntRange(min=2), default=1000, show_default=True,
              help="At most this many paragraphs, a seeded sample.")
@click.option("--min-words", type=click.IntRange(min=2), default=16, show_default=True,
              help="Paragraphs shorter than this are skipped.")
@click.option("--rrf-k", type=FiniteFloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="The constant k of reciprocal-rank fusion for the RRF hybrid row.")
@click.option("--alpha", type=FiniteFloatRange(min=0, max=1), default=None,
              help="The weight α of the vectors' z-scores in the score-fusion hybrid row. "
                   "[default: the one fitted in CHECKPOINT's training, else 0.5]")
@click.option("--fit-on", "fit_on", type=click.Path(dir_okay=False), default=None, metavar="TEXT",
              help="Fit α (and the lexical method) on the paragraphs of this validation text, not "
                   "on the pairs reported, e.g. RUN/validation.txt.")
@click.option("--lexical", type=click.Choice(["bm25", "tfidf", "tfidf-sub"]), default=None,
              help="The lexical method of the score-fusion row. [default: the fitted one, else bm25]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed for the sample of paragraphs and the random baseline.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Also write the numbers as JSON to PATH ('-': standard output, which then holds the JSON "
                   "alone; the table goes to stderr).")
def retrieval(checkpoint, text_files, pairs_file, max_pairs, min_words, rrf_k, alpha, fit_on, lexical,
              seed, json_path):
    """Retrieval benchmark: Recall@1, Recall@10 and MRR of CHECKPOINT's embeddings.

    Each paragraph (blocks separated by blank lines) of TEXT_FILES, or of the built-in corpus if
    none are given, is cut at its middle word: the first half is a query, the second half a
    document, and each query must find its own document among all of them. The checkpoint (a
    language model or a contrastive encoder) is scored with last and mean pooling, mean pooling
    centred, and whitened (fitted on the documents), next to random scores, TF-IDF, BM25, subword TF-IDF, and two
    hybrids of the centred mean-pooled vectors with a lexical method: reciprocal-rank fusion with
    BM25 (--rrf-k), and score fusion, α·z(cosine) + (1 − α)·z(lexical score) with per-query
    z-scores, its α fitted on validation paragraphs by `bptt contrastive` (or --fit-on, --alpha).
    """
    import json

    from bptt.contrastive import load_embedder
    from bptt.data import load_corpus
    from bptt.generate import embed_texts
    from bptt.lexical import LEXICAL
    from bptt.retrieval import (
        benchmark,
        centred_cosines,
        dense_variants,
        fit_fusion,
        format_table,
        lexical_scores,
        paragraph_pairs,
        read_pairs,
        resolve_fusion,
        trivial_recall_note,
    )
    try:
        model, tok, ckpt = load_embedder(checkpoint)
        fitted = ckpt.get("fusion")
        if pairs_file:
            if text_files:
                raise ValueError("give either TEXT_FILES or --pairs, not both")
            queries, docs = read_pairs(pairs_file)
            source = pairs_file
        else:
            source = ", ".join(text_files) or "the built-in corpus"
            text = load_corpus(list(text_files) or None)
            try:
                queries, docs = paragraph_pairs(text, max_pairs=max_pairs, seed=seed, min_words=min_words)
            except ValueError as e:
                raise ValueError(f"{source}: {e}") from None
        click.echo(f"{len(queries)} queries against {len(docs)} documents from {source}", err=True)
        note = trivial_recall_note(len(docs))
        if note:
            click.echo(note, err=True)
        embed = lambda texts, pool: embed_texts(model, tok, texts, pool=pool, normalize=False)
        if fit_on:
            try:
                fq, fd = paragraph_pairs(load_corpus([fit_on]), max_pairs=max_pairs, seed=seed,
                                         min_words=min_words)
            except ValueError as e:   # say which of the texts it is
                raise ValueError(f"--fit-on {fit_on}: {e}") from None
            fitted = fit_fusion(centred_cosines(embed(fq, "mean"), embed(fd, "mean")),
                                {k: lexical_scores(k, fq, fd) for k in LEXICAL})
            shared = len(set(fq) & set(queries))
            click.echo(f"fitted α = {fitted['alpha']:g} with {fitted['lexical']} on {len(fq)} pairs of {fit_on}"
                       + (f" (warning: {shared} of them are also reported here, so the hybrid row is "
                          "optimistic)" if shared else ""), err=True)
        spec, where = resolve_fusion(fitted, fusion="score", alpha=alpha, lexical=lexical)
        if where == "default":
            click.echo(f"no fitted α in {checkpoint}: the score-fusion row uses α = {spec['alpha']:g} "
                       "(--fit-on TEXT fits one)", err=True)
        dense = dense_variants(embed, queries, docs)
        rows = benchmark(queries, docs, dense, seed=seed, rrf_k=rrf_k, hybrid_with="mean, centred", fusion=spec)
    except user_errors() as e:
        fail(str(e))
    # with --json -, standard output is the JSON alone (so it parses); the table goes to stderr
    click.echo(format_table(rows), err=json_path == "-")
    if json_path:
        doc = {"checkpoint": str(checkpoint), "source": source, "pairs": len(queries), "seed": seed,
               "rrf_k": rrf_k, "fusion": {**spec, "from": "--fit-on" if fit_on and where == "fitted" else where},
               "methods": rows}
        if note:
            doc["note"] = note[len("note: "):]
        if json_path == "-":
            click.echo(json.dumps(doc, indent=1))
        else:
            try:
                with open(json_path, "w", encoding="utf-8") as f:
                    json.dump(doc, f, indent=1)
            except OSError as e:
                fail(f"cannot write {json_path}: {e.strerror}")


COMMANDS = [retrieval]
