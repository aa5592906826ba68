"""FHIR R4 read API (README, REST API): ``/fhir/r4/``.

``mapping`` turns records into FHIR resources (plain dicts, valid against the R4B models
of ``fhir.resources``), ``views`` serves them with the REST API's tokens and clinic
scoping, ``urls`` routes them.
"""
