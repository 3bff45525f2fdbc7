"""``minetune serve``: the web app and the OpenAI-compatible learning proxy (an interface layer).

Routes parse a request, make one library call through the user's :class:`~minetune.store.Store`
and render; nothing here holds learning logic.
"""
