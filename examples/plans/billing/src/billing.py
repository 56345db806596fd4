"""A tiny billing service, the context file of the example plan."""

from dataclasses import dataclass


@dataclass
class Customer:
    id: int
    name: str
    balance_cents: int = 0


def charge(customer: Customer, cents: int) -> Customer:
    if cents <= 0:
        raise ValueError("charge a positive amount")
    return Customer(customer.id, customer.name, customer.balance_cents + cents)
