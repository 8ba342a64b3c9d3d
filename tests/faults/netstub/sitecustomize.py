"""Loaded by Python at start-up when this folder is on PYTHONPATH (the reliability suite sets it for one subprocess):
replaces the network calls of medvqa's task scripts, and only those, so their real checks run offline.

MEDICO_NETSTUB_SNAPSHOT: the folder `snapshot_download` "downloads" (the repo's files as uploaded).
"""
import os

if os.environ.get('MEDICO_NETSTUB_SNAPSHOT'):
    import gradio_client
    import huggingface_hub

    class _Client:
        def __init__(self, *args, **kwargs):
            pass

        def predict(self, *args, **kwargs):
            return 'submission server (stub): ok'

    gradio_client.Client = _Client
    gradio_client.handle_file = lambda path: path
    huggingface_hub.whoami = lambda *args, **kwargs: {'name': 'tester'}
    huggingface_hub.login = lambda *args, **kwargs: None
    huggingface_hub.snapshot_download = lambda *args, **kwargs: os.environ['MEDICO_NETSTUB_SNAPSHOT']
    huggingface_hub.grant_access = lambda *args, **kwargs: None
    huggingface_hub.HfApi.update_repo_settings = lambda self, *args, **kwargs: None
