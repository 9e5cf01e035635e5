"""AUTOMATIC1111's HTTP API (`/sdapi/v1/*`) over the same PipelineManager and typed request as the UI and the CLI.

requests.py: request bodies generated from the GenerationParams declarations → GenerationParams;
responses.py: A1111's response shapes; options.py: the settings under A1111's option names; routes.py: the routes;
errors.py: A1111's error bodies and the API log; auth.py: --api-auth; server.py: mounting it on the UI's server or
serving it alone (--nowebui). Nothing here touches a model: every job goes through the manager's queue."""
