"""A plain multi-layer perceptron classifier: the demo's baseline model family."""

from __future__ import annotations

from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Linear → ReLU blocks of width `hidden`, then a linear classifier.

    Args:
        in_features: input width (64 for 8×8 digits).
        hidden: width of each hidden layer.
        num_classes: number of output logits.
        depth: number of hidden layers (>= 1).
        dropout: dropout after each hidden activation (training only).
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, depth: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        for name, v in (("in_features", in_features), ("hidden", hidden),
                        ("num_classes", num_classes), ("depth", depth)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MLP: {name} must be an int >= 1, got {v!r}")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, in_features) -> (B, num_classes)
        return self.net(x)
