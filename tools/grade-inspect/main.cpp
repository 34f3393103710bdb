// PLACEHOLDER main, replaced shortly.
int main() { return 1; }
