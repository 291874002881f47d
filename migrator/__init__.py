"""The runner. Data flows one way: configuration -> connect -> bootstrap -> lock -> read files
-> plan -> apply -> record -> exit; the subpackages hold those roles."""
