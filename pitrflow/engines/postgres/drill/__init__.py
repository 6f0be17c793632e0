"""The PostgreSQL recovery drill: target, scratch access, integrity checks, source facts."""
