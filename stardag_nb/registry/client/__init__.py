"""The registry service's client (``stardag-nb serve`` or stardag's own service): the
registry over HTTP (``registry``), its batched writes (``batch``), workspace and
environment administration (``admin``), task locks (``locks``), the HTTP layer with its
retries and errors (``http``) and how it reports an outage (``outage``).

Imported on first use (httpx and the wire models cost nothing before);
:mod:`stardag_nb.registry` re-exports the public names."""
