"""What a project says: arches, recipes, the configuration, their validation and the task graph made of them.
Files in, validated models and a networkx graph out; nothing here runs a build.
"""
