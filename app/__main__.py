"""`python -m app COMMAND ...`: the `genrec` command, for launchers that start a module
(`torchrun -m app train ...`, `accelerate launch -m app train ...`)."""

from app.cli import main

main()
