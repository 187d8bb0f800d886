"""EMO data pipeline: tokenizer, JSON-lines -> Megatron indexed datasets, datasets with document ids.

Every bad input raises ``emo_plugin.errors.DataError``.

Importing this package is cheap; import the pieces from their modules (only ``dataset`` and
``preprocess`` pull in Megatron):

* ``emo_plugin.data.tokenizer``    - ``train_tokenizer``, ``EmoTokenizer`` (EOD = ``<|endoftext|>``, pad = 0)
* ``emo_plugin.data.records``      - strict JSON-lines reading (``iter_texts``, ``parse_record``)
* ``emo_plugin.data.preprocess``   - ``preprocess_jsonl``: corpus -> ``.bin/.idx/.meta.json``
* ``emo_plugin.data.dataset_meta`` - ``DatasetMeta``: the tokenizer sidecar and its check
* ``emo_plugin.data.integrity``    - ``check_dataset``: ``.bin``/``.idx`` against the sidecar, content fingerprint
* ``emo_plugin.data.dataset``      - ``EmoGPTDataset`` (samples carry ``doc_ids``), ``build_emo_gpt_datasets``
* ``emo_plugin.data.documents``    - ``doc_ids_from_tokens`` (for batches without ``doc_ids``)
"""
