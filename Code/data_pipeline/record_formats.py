"""Records to documents: the prompt/response templates of the record datasets (dolly, CNN/DailyMail), WikiText
hub rows rebuilt into articles, and one text field per record for everything else."""

from __future__ import annotations

from Code.data_pipeline import cnn_dataset
from Code.data_pipeline.corpus_sources import SourceError, split_documents
from Code.data_pipeline.doc_encoding import Doc

DOLLY_HEAD = (
    "Below is an instruction that describes a task{}. Write a response that appropriately completes the request."
)
# record kinds whose documents are (prompt, response) pairs: their raw records are kept beside the tokens
PROMPT_KINDS = ("dolly", "cnn")


def format_dolly(record: dict) -> tuple[str, str]:
    """(prompt, response) of a databricks-dolly-15k record, in the Alpaca template MiniLLM uses."""
    try:
        instruction, response = record["instruction"].strip(), record["response"].strip()
    except (KeyError, AttributeError):
        raise SourceError(f"dolly record lacks 'instruction'/'response' (has {sorted(record)})") from None
    context = (record.get("context") or "").strip()
    if context:
        head = DOLLY_HEAD.format(", paired with an input that provides further context")
        prompt = f"{head}\n\n### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n### Response:\n"
    else:
        prompt = f"{DOLLY_HEAD.format('')}\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    return prompt, response


def records_to_docs(kind: str, records: list, text_field: str = "text") -> list[Doc]:
    """Documents of `records` of one kind: `wikitext` (hub rows are lines), `dolly`, `cnn`, or `field`."""
    if kind == "wikitext":  # hub WikiText rows are lines; articles are rebuilt from the headings
        return split_documents(r["text"] for r in records)
    if kind == "dolly":
        return [format_dolly(r) for r in records]
    if kind == "cnn":
        return [cnn_dataset.format_record(r) for r in records]
    docs = []
    for i, r in enumerate(records):
        value = r.get(text_field) if isinstance(r, dict) else None
        if not isinstance(value, str):
            have = sorted(r) if isinstance(r, dict) else type(r).__name__
            raise SourceError(f"record {i} has no text field {text_field!r} (has {have}): pass --text-field NAME")
        docs.append(value)
    return docs
