"""What a training run reports. Torch-free, so the daemon side of a job can read it cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TrainResult:
    loss: float
    """SFT: mean training loss over the last 10% of steps. GRPO: the policy loss of the last step."""
    num_tokens: int
    """Tokens fed to the model (prompt + response, unpadded) over the whole run."""
    num_steps: int
    seconds: float
    loss_history: list[float] = field(default_factory=list)
    """SFT: the loss of every step. GRPO: the mean reward of every step."""
