"""The console's pages, one module each; each exposes `routes(console) -> APIRouter`."""
