"""The application core: every user operation once, for every interface.

The CLI, the web app, the ``/v1`` proxy and the library ``Session`` call these functions; each
operation is one unit of work (one transaction), and policy (what counts as accepted, praise is
5 stars unless rated explicitly, when learning runs) lives here and nowhere else.

- :mod:`minetune.app.exchange`: send/record, rate, praise, retry, learn, accept-for-training.
- :mod:`minetune.app.forget`: erasure of interactions and everything derived from them.
- :mod:`minetune.app.jobs`: the one job runner for background work.
"""
