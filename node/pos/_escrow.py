"""Where the POS schema keeps rights requests: one register per member balance and device."""

from gossip import EscrowKeys

__all__ = ["POS_ESCROW"]


def _request_key(balance: tuple, device: int) -> tuple:
    # ("member", member_id, "balance") -> ("rights", member_id, device)
    return ("rights", balance[1], device)


def _balance_key(request: tuple) -> tuple:
    return ("member", request[1], "balance")


POS_ESCROW = EscrowKeys(request_kind="rights", request_key=_request_key, bounded_key=_balance_key)
