"""Export all-MiniLM-L6-v2's BertModel to ONNX (fp32) for the ONNX Runtime peer; runs in venv-st.

    python export_onnx.py MODEL_DIR OUT.onnx

Inputs input_ids, attention_mask, token_type_ids (int64, batch x sequence, both axes dynamic); one output,
last_hidden_state (batch x sequence x 384). Pooling and normalisation stay outside the graph, in numpy, as
the ORT worker does them.
"""

import sys

import torch
from transformers import BertModel

OPSET = 17


class LastHiddenState(torch.nn.Module):
    """BertModel returning only the last hidden state, so the graph has no unused pooler head."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]


def main(model_dir, out_path):
    model = LastHiddenState(BertModel.from_pretrained(model_dir)).eval()
    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2023, 2003, 1037, 102]], dtype=torch.int64)  # (2, 5)
    mask = (ids != 0).to(torch.int64)  # (2, 5): the first row is padded, so masking is traced
    types = torch.zeros_like(ids)  # (2, 5)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, types),
            out_path,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                          "last_hidden_state": axes},
            opset_version=OPSET,
            dynamo=False,
        )
    print(f"wrote {out_path}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: export_onnx.py MODEL_DIR OUT.onnx")
    main(sys.argv[1], sys.argv[2])
