"""``python -m grpojax COMMAND ...`` = the ``grpojax`` console command (:mod:`grpojax.commands`)."""

from grpojax.commands import main

if __name__ == "__main__":
    main()
