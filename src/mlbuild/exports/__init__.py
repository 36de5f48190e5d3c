"""What leaves mlbuild besides the system: the SPDX SBOM, the legal-info folder and the build as a
plain shell script, each made by asking every step of the graph through the Step protocol.
"""
