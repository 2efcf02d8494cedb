"""bench.workers.lm: generation stops once every answer in the batch is complete, never earlier."""

import torch

from bench.workers.lm import AnswersComplete


def test_a_batch_stops_only_when_every_sequence_has_ended_or_finished_its_line(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    prompt = tok("Answer: ").input_ids

    def batch(*texts, eos=()):
        rows = [prompt + tok(t, add_special_tokens=False).input_ids for t in texts]
        for i in eos:
            rows[i] = rows[i] + [tok.eos_token_id]
        width = max(map(len, rows))
        return torch.tensor([r + [tok.pad_token_id or 0] * (width - len(r)) for r in rows])

    stop = AnswersComplete(tok, len(prompt), 3, [tok.eos_token_id])
    assert not stop(batch("\npositive", "neu", "neg"), None)  # no line ended yet
    assert not stop(batch("\npositive\n", "neutral", "neg"), None)  # one done
    assert stop.done == [True, False, False]
    assert not stop(batch("\npositive\nThe", "neutral", "negative"), None)
    assert stop(batch("\npositive\nThe", "neutral", "negative\n", eos=(1,)), None)  # EOS counts as done
    assert stop.done == [True, True, True]
