"""The bundled API of chatcore: the FastAPI app, its composition root, the ``/ws`` protocol
server and the ``chatcore`` command. Build an app with :func:`chatcore_api.app.create_app`."""
