"""Each domain of a labelled corpus split into calibration and held-out token ids, for the experiments that choose
or rank experts on some data of a domain and measure the loss on the rest (``subset_experiment.py``,
``exclusion_experiment.py``).

The calibration data are the first ``calib_docs`` documents of the domain, or k-shot task prompts of the domain
(``task_prompts``, formatted by ``emo_plugin.evaluation.selection.task_prompts``; then every corpus document is
held out). The held-out documents follow, up to ``max_eval_tokens_per_domain`` tokens.

``args`` is the parsed command line of ``emo-evaluate-subsets`` or ``emo-exclude-experts`` (any object with the
attributes read below: the options of ``emo_plugin/cli/model_on_corpus.py``, ``--domains``, ``--calib-docs``,
``--max-eval-tokens-per-domain``, ``--task-prompts`` and, with task prompts, those of
``emo_plugin/cli/task_prompt_options.py``); errors name those options.
"""

from __future__ import annotations

from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.checkpoint import eos_token_id
from emo_plugin.evaluation.analysis.corpus import group_by_domain, read_labelled_corpus
from emo_plugin.evaluation.analysis.text_encoding import encode_documents
from emo_plugin.evaluation.selection.task_prompts import (
    format_prompts,
    read_task_records,
    template_fields,
    tokenize_prompts,
)


def task_prompts_by_domain(args, domains: list[str]) -> dict:
    """{domain: k-shot prompts} from --task-prompts, the shots and queries of each domain drawn from its records."""
    fields = template_fields(args.template, args.answer_field)
    by_domain: dict[str, list[dict]] = {}
    for record in read_task_records(args.task_prompts, fields + [args.domain_field]):
        by_domain.setdefault(str(record[args.domain_field]), []).append(record)
    missing = sorted(set(domains) - set(by_domain))
    if missing:
        raise AnalysisError(f"{args.task_prompts}: no task records with {args.domain_field} {missing}")
    return {
        name: format_prompts(by_domain[name], args.template, args.answer_field, args.num_shots, args.num_examples)
        for name in domains
    }


def split_domains(args, encode, model) -> dict[str, tuple[list, list, list | None]]:
    """{domain: (calibration sequences, held-out documents, answer starts of task prompts or None)}, as token ids."""
    grouped = group_by_domain(read_labelled_corpus(args.corpus, args.text_field, args.domain_field))
    if args.domains:
        missing = sorted(set(args.domains) - set(grouped))
        if missing:
            raise AnalysisError(
                f"{args.corpus}: no documents with {args.domain_field} {missing} (have {sorted(grouped)})"
            )
        grouped = {name: grouped[name] for name in args.domains}
    max_doc_tokens = args.max_doc_tokens or model.config.max_position_embeddings
    encode_args = (encode, eos_token_id(model), model.config.vocab_size, max_doc_tokens)
    prompts = task_prompts_by_domain(args, list(grouped)) if args.task_prompts else None
    calib_docs = 0 if prompts else args.calib_docs
    splits = {}
    for name, documents in grouped.items():
        texts = [d.text for d in documents]
        if len(texts) <= calib_docs:
            raise AnalysisError(
                f"domain {name!r} has {len(texts)} documents: need more than --calib-docs {calib_docs}"
            )
        heldout = encode_documents(texts[calib_docs:], *encode_args, args.max_eval_tokens_per_domain)
        answer_starts = None
        if prompts:
            tokens = tokenize_prompts(encode, prompts[name], eos_token_id(model), max_doc_tokens)
            calibration, answer_starts = [t.ids for t in tokens], [t.answer_start for t in tokens]
        else:
            calibration = encode_documents(texts[:calib_docs], *encode_args)
        if not calibration or not heldout:
            raise AnalysisError(f"domain {name!r}: no calibration or no held-out document with any token")
        splits[name] = (calibration, heldout, answer_starts)
    return splits
