"""The built-in problems of the `code` environment, written for resd (not taken from any benchmark).

Each problem: `id`, `statement`, either stdin/stdout `tests` (`input` text -> expected `output`
text) or a function name `fn_name` with `tests` of `args` (a list) -> expected `output` (a
JSON-compatible value), and our own reference `solution`. The first `shown` tests appear in the
prompt as examples; all tests are judged, so most are hidden. `tests/test_code_env.py` checks
that every reference solution passes every test in the sandbox.
"""

from __future__ import annotations

from typing import Any

PROBLEMS: list[dict[str, Any]] = [
    # ---- standard input / standard output -------------------------------------------------
    {
        "id": "add-two",
        "statement": "Read two integers a and b on one line, separated by a space, and print their sum.",
        "tests": [("3 4\n", "7"), ("-5 5\n", "0"), ("1000000000 1000000000\n", "2000000000"),
                  ("0 0\n", "0"), ("-7 -8\n", "-15")],
        "solution": "a, b = map(int, input().split())\nprint(a + b)\n",
    },
    {
        "id": "reverse-line",
        "statement": "Read one line of text and print it reversed, character by character.",
        "tests": [("hello\n", "olleh"), ("abc def\n", "fed cba"), ("a\n", "a"), ("racecar\n", "racecar"),
                  ("12345\n", "54321")],
        "solution": "print(input()[::-1])\n",
    },
    {
        "id": "count-vowels",
        "statement": "Read one line of text and print how many vowels (a, e, i, o, u, in either case) it contains.",
        "tests": [("hello world\n", "3"), ("AEIOU\n", "5"), ("rhythm\n", "0"), ("Programming Is Fun\n", "5"),
                  ("xyz AxE\n", "2")],
        "solution": "print(sum(ch in 'aeiou' for ch in input().lower()))\n",
    },
    {
        "id": "fizzbuzz",
        "statement": ("Read an integer n and print the numbers 1 to n, one per line, but print Fizz instead of "
                      "multiples of 3, Buzz instead of multiples of 5, and FizzBuzz instead of multiples of both."),
        "tests": [("5\n", "1\n2\nFizz\n4\nBuzz"), ("1\n", "1"),
                  ("15\n", "1\n2\nFizz\n4\nBuzz\nFizz\n7\n8\nFizz\nBuzz\n11\nFizz\n13\n14\nFizzBuzz"),
                  ("3\n", "1\n2\nFizz")],
        "solution": ("n = int(input())\nfor i in range(1, n + 1):\n"
                     "    print('FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else i)\n"),
    },
    {
        "id": "max-of-list",
        "statement": "The first line holds n; the second holds n integers. Print the largest of them.",
        "tests": [("3\n1 5 2\n", "5"), ("1\n-4\n", "-4"), ("5\n-1 -2 -3 -4 -5\n", "-1"), ("4\n7 7 7 7\n", "7"),
                  ("6\n10 20 30 25 15 5\n", "30")],
        "solution": "input()\nprint(max(map(int, input().split())))\n",
    },
    {
        "id": "digit-sum",
        "statement": "Read a non-negative integer (it may have up to 1000 digits) and print the sum of its digits.",
        "tests": [("123\n", "6"), ("0\n", "0"), ("99999\n", "45"), ("1000000000000000000001\n", "2"),
                  ("5\n", "5")],
        "solution": "print(sum(int(c) for c in input().strip()))\n",
    },
    {
        "id": "palindrome",
        "statement": ("Read one word made of lowercase letters. Print YES if it reads the same forwards and "
                      "backwards, otherwise NO."),
        "tests": [("level\n", "YES"), ("hello\n", "NO"), ("a\n", "YES"), ("abba\n", "YES"), ("abca\n", "NO")],
        "solution": "s = input().strip()\nprint('YES' if s == s[::-1] else 'NO')\n",
    },
    {
        "id": "factorial",
        "statement": "Read an integer n (0 <= n <= 25) and print n! (n factorial).",
        "tests": [("5\n", "120"), ("0\n", "1"), ("1\n", "1"), ("10\n", "3628800"),
                  ("25\n", "15511210043330985984000000")],
        "solution": "import math\nprint(math.factorial(int(input())))\n",
    },
    {
        "id": "fibonacci",
        "statement": "Read n (0 <= n <= 90) and print F(n), where F(0) = 0, F(1) = 1 and F(n) = F(n-1) + F(n-2).",
        "tests": [("10\n", "55"), ("0\n", "0"), ("1\n", "1"), ("2\n", "1"), ("50\n", "12586269025"),
                  ("90\n", "2880067194370816120")],
        "solution": "n = int(input())\na, b = 0, 1\nfor _ in range(n):\n    a, b = b, a + b\nprint(a)\n",
    },
    {
        "id": "count-words",
        "statement": "Read one line and print the number of words in it (words are separated by one or more spaces).",
        "tests": [("the quick brown fox\n", "4"), ("one\n", "1"), ("  spaced   out  words \n", "3"),
                  ("a b c d e f\n", "6")],
        "solution": "print(len(input().split()))\n",
    },
    {
        "id": "prime-check",
        "statement": "Read an integer n (1 <= n <= 10^12). Print prime if n is a prime number, otherwise not prime.",
        "tests": [("7\n", "prime"), ("1\n", "not prime"), ("2\n", "prime"), ("91\n", "not prime"),
                  ("999999937\n", "prime"), ("1000000000000\n", "not prime")],
        "solution": ("n = int(input())\nok = n > 1\ni = 2\nwhile ok and i * i <= n:\n"
                     "    if n % i == 0:\n        ok = False\n    i += 1\nprint('prime' if ok else 'not prime')\n"),
    },
    {
        "id": "gcd",
        "statement": "Read two positive integers a and b on one line and print their greatest common divisor.",
        "tests": [("12 18\n", "6"), ("7 13\n", "1"), ("100 10\n", "10"), ("36 36\n", "36"),
                  ("1071 462\n", "21")],
        "solution": "import math\na, b = map(int, input().split())\nprint(math.gcd(a, b))\n",
    },
    {
        "id": "sort-numbers",
        "statement": ("The first line holds n; the second holds n integers. Print them in ascending order on one "
                      "line, separated by single spaces."),
        "tests": [("5\n3 1 4 1 5\n", "1 1 3 4 5"), ("1\n42\n", "42"), ("4\n-2 10 0 -2\n", "-2 -2 0 10"),
                  ("3\n9 8 7\n", "7 8 9")],
        "solution": "input()\nprint(*sorted(map(int, input().split())))\n",
    },
    {
        "id": "second-largest",
        "statement": ("The first line holds n; the second holds n integers. Print the second largest distinct "
                      "value, or NONE if there are fewer than two distinct values."),
        "tests": [("5\n4 1 4 3 2\n", "3"), ("3\n5 5 5\n", "NONE"), ("2\n-1 -2\n", "-2"), ("1\n9\n", "NONE"),
                  ("6\n10 9 10 8 9 7\n", "9")],
        "solution": ("input()\nvalues = sorted(set(map(int, input().split())))\n"
                     "print(values[-2] if len(values) > 1 else 'NONE')\n"),
    },
    {
        "id": "most-frequent-char",
        "statement": ("Read one word of lowercase letters. Print its most frequent letter and how many times it "
                      "occurs, separated by a space. If several letters tie, print the alphabetically first."),
        "tests": [("banana\n", "a 3"), ("abc\n", "a 1"), ("zzyy\n", "y 2"), ("mississippi\n", "i 4"),
                  ("q\n", "q 1")],
        "solution": ("from collections import Counter\ncounts = Counter(input().strip())\n"
                     "best = min(counts, key=lambda c: (-counts[c], c))\nprint(best, counts[best])\n"),
    },
    {
        "id": "star-triangle",
        "statement": "Read n and print a triangle of n lines: line i (1-based) holds i asterisks (*).",
        "tests": [("3\n", "*\n**\n***"), ("1\n", "*"), ("5\n", "*\n**\n***\n****\n*****")],
        "solution": "n = int(input())\nfor i in range(1, n + 1):\n    print('*' * i)\n",
    },
    {
        "id": "to-binary",
        "statement": "Read a non-negative integer n and print it in binary, without leading zeros (0 prints 0).",
        "tests": [("5\n", "101"), ("0\n", "0"), ("1\n", "1"), ("255\n", "11111111"), ("1024\n", "10000000000")],
        "solution": "print(bin(int(input()))[2:])\n",
    },
    {
        "id": "caesar-shift",
        "statement": ("The first line holds a shift k (0 <= k <= 25); the second a line of text. Shift every "
                      "lowercase letter k places forward in the alphabet (z wraps to a) and leave every other "
                      "character unchanged. Print the result."),
        "tests": [("1\nabc xyz\n", "bcd yza"), ("0\nhello\n", "hello"), ("13\nhello, world!\n", "uryyb, jbeyq!"),
                  ("25\nBa b\n", "Bz a")],
        "solution": ("k = int(input())\ntext = input()\n"
                     "print(''.join(chr((ord(c) - 97 + k) % 26 + 97) if 'a' <= c <= 'z' else c for c in text))\n"),
    },
    {
        "id": "transpose",
        "statement": ("The first line holds r and c; then r lines of c integers each. Print the transposed matrix: "
                      "c lines of r integers separated by spaces."),
        "tests": [("2 3\n1 2 3\n4 5 6\n", "1 4\n2 5\n3 6"), ("1 1\n7\n", "7"), ("3 1\n1\n2\n3\n", "1 2 3"),
                  ("2 2\n1 2\n3 4\n", "1 3\n2 4")],
        "solution": ("r, c = map(int, input().split())\nrows = [input().split() for _ in range(r)]\n"
                     "for col in zip(*rows):\n    print(*col)\n"),
    },
    {
        "id": "prefix-sums",
        "statement": ("The first line holds n; the second n integers. Print the running sums (the sum of the first "
                      "1, 2, ..., n numbers) on one line separated by spaces."),
        "tests": [("4\n1 2 3 4\n", "1 3 6 10"), ("1\n5\n", "5"), ("3\n-1 1 -1\n", "-1 0 -1"),
                  ("5\n0 0 0 0 0\n", "0 0 0 0 0")],
        "solution": "import itertools\ninput()\nprint(*itertools.accumulate(map(int, input().split())))\n",
    },
    {
        "id": "leap-year",
        "statement": ("Read a year. Print leap if it is a leap year in the Gregorian calendar (divisible by 4, "
                      "except centuries not divisible by 400), otherwise common."),
        "tests": [("2024\n", "leap"), ("1900\n", "common"), ("2000\n", "leap"), ("2023\n", "common"),
                  ("2100\n", "common")],
        "solution": "y = int(input())\nprint('leap' if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 'common')\n",
    },
    {
        "id": "anagrams",
        "statement": "Read two words on one line. Print YES if one is an anagram of the other, otherwise NO.",
        "tests": [("listen silent\n", "YES"), ("abc abd\n", "NO"), ("a a\n", "YES"), ("ab abb\n", "NO"),
                  ("evil vile\n", "YES")],
        "solution": "a, b = input().split()\nprint('YES' if sorted(a) == sorted(b) else 'NO')\n",
    },
    # ---- function call ----------------------------------------------------------------------------
    {
        "id": "two-sum",
        "fn_name": "two_sum",
        "statement": ("Write a function two_sum(nums, target) that returns the indices [i, j] with i < j of the "
                      "two numbers in the list nums that add up to target. Exactly one such pair exists."),
        "tests": [([[2, 7, 11, 15], 9], [0, 1]), ([[3, 2, 4], 6], [1, 2]), ([[3, 3], 6], [0, 1]),
                  ([[1, 4, -2, 8], 6], [2, 3]), ([[0, 4, 3, 0], 0], [0, 3])],
        "solution": ("def two_sum(nums, target):\n    seen = {}\n    for j, x in enumerate(nums):\n"
                     "        if target - x in seen:\n            return [seen[target - x], j]\n"
                     "        seen[x] = j\n"),
    },
    {
        "id": "balanced-brackets",
        "fn_name": "is_balanced",
        "statement": ("Write a function is_balanced(s) that returns True if the brackets (), [] and {} in the "
                      "string s are balanced and properly nested, otherwise False. Other characters are ignored."),
        "tests": [(["([]){}"], True), (["([)]"], False), ([""], True), (["((("], False), (["a(b[c]d)e"], True),
                  (["}"], False)],
        "solution": ("def is_balanced(s):\n    pairs = {')': '(', ']': '[', '}': '{'}\n    stack = []\n"
                     "    for ch in s:\n        if ch in '([{':\n            stack.append(ch)\n"
                     "        elif ch in pairs:\n            if not stack or stack.pop() != pairs[ch]:\n"
                     "                return False\n    return not stack\n"),
    },
    {
        "id": "flatten",
        "fn_name": "flatten",
        "statement": "Write a function flatten(items) that turns a list of arbitrarily nested lists into a flat list.",
        "tests": [([[1, [2, [3, 4]], 5]], [1, 2, 3, 4, 5]), ([[]], []), ([[[[[]]]]], []), ([[1, 2, 3]], [1, 2, 3]),
                  ([[["a"], ["b", ["c"]]]], ["a", "b", "c"])],
        "solution": ("def flatten(items):\n    out = []\n    for x in items:\n"
                     "        out.extend(flatten(x) if isinstance(x, list) else [x])\n    return out\n"),
    },
    {
        "id": "roman-to-int",
        "fn_name": "roman_to_int",
        "statement": "Write a function roman_to_int(s) that converts a Roman numeral (1 to 3999) to an integer.",
        "tests": [(["III"], 3), (["IV"], 4), (["IX"], 9), (["LVIII"], 58), (["MCMXCIV"], 1994),
                  (["MMMCMXCIX"], 3999)],
        "solution": ("def roman_to_int(s):\n    v = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}\n"
                     "    total = 0\n    for a, b in zip(s, s[1:] + ' '):\n"
                     "        total += -v[a] if b != ' ' and v[a] < v[b] else v[a]\n    return total\n"),
    },
    {
        "id": "merge-intervals",
        "fn_name": "merge_intervals",
        "statement": ("Write a function merge_intervals(intervals) that merges overlapping closed intervals "
                      "[start, end] and returns them sorted by start. Touching intervals like [1, 2] and [2, 3] "
                      "overlap."),
        "tests": [([[[1, 3], [2, 6], [8, 10]]], [[1, 6], [8, 10]]), ([[[1, 2], [2, 3]]], [[1, 3]]), ([[]], []),
                  ([[[5, 7], [1, 2]]], [[1, 2], [5, 7]]), ([[[1, 10], [2, 3], [4, 5]]], [[1, 10]])],
        "solution": ("def merge_intervals(intervals):\n    out = []\n    for s, e in sorted(intervals):\n"
                     "        if out and s <= out[-1][1]:\n            out[-1][1] = max(out[-1][1], e)\n"
                     "        else:\n            out.append([s, e])\n    return out\n"),
    },
    {
        "id": "common-prefix",
        "fn_name": "longest_common_prefix",
        "statement": ("Write a function longest_common_prefix(words) that returns the longest string that starts "
                      "every word in the non-empty list words (possibly the empty string)."),
        "tests": [([["flower", "flow", "flight"]], "fl"), ([["dog", "racecar", "car"]], ""), ([["alone"]], "alone"),
                  ([["same", "same"]], "same"), ([["ab", "a"]], "a")],
        "solution": ("def longest_common_prefix(words):\n    prefix = words[0]\n    for w in words[1:]:\n"
                     "        while not w.startswith(prefix):\n            prefix = prefix[:-1]\n    return prefix\n"),
    },
    {
        "id": "rotate-right",
        "fn_name": "rotate_right",
        "statement": ("Write a function rotate_right(nums, k) that returns the list nums rotated k steps to the "
                      "right (k may be larger than the length; an empty list stays empty)."),
        "tests": [([[1, 2, 3, 4, 5], 2], [4, 5, 1, 2, 3]), ([[1, 2], 0], [1, 2]), ([[1, 2, 3], 4], [3, 1, 2]),
                  ([[], 3], []), ([[7], 100], [7])],
        "solution": ("def rotate_right(nums, k):\n    if not nums:\n        return []\n    k %= len(nums)\n"
                     "    return nums[-k:] + nums[:-k] if k else list(nums)\n"),
    },
    {
        "id": "unique-sorted",
        "fn_name": "unique_sorted",
        "statement": "Write a function unique_sorted(nums) that returns the distinct values of nums in ascending order.",
        "tests": [([[3, 1, 3, 2, 1]], [1, 2, 3]), ([[]], []), ([[5, 5, 5]], [5]), ([[-1, 4, -1, 0]], [-1, 0, 4])],
        "solution": "def unique_sorted(nums):\n    return sorted(set(nums))\n",
    },
    {
        "id": "run-length",
        "fn_name": "run_length",
        "statement": ("Write a function run_length(s) that encodes each run of equal characters as the character "
                      "followed by the run length, e.g. 'aaabcc' -> 'a3b1c2'. The empty string encodes to ''."),
        "tests": [(["aaabcc"], "a3b1c2"), ([""], ""), (["x"], "x1"), (["abab"], "a1b1a1b1"),
                  (["zzzzzzzzzzzz"], "z12")],
        "solution": ("def run_length(s):\n    out = []\n    i = 0\n    while i < len(s):\n        j = i\n"
                     "        while j < len(s) and s[j] == s[i]:\n            j += 1\n"
                     "        out.append(s[i] + str(j - i))\n        i = j\n    return ''.join(out)\n"),
    },
    {
        "id": "max-subarray",
        "fn_name": "max_subarray",
        "statement": ("Write a function max_subarray(nums) that returns the largest sum of a non-empty contiguous "
                      "part of the non-empty list nums."),
        "tests": [([[-2, 1, -3, 4, -1, 2, 1, -5, 4]], 6), ([[1]], 1), ([[-3, -1, -2]], -1), ([[5, 4, -1, 7, 8]], 23),
                  ([[2, -1, 2]], 3)],
        "solution": ("def max_subarray(nums):\n    best = cur = nums[0]\n    for x in nums[1:]:\n"
                     "        cur = max(x, cur + x)\n        best = max(best, cur)\n    return best\n"),
    },
    {
        "id": "word-lengths",
        "fn_name": "word_lengths",
        "statement": ("Write a function word_lengths(sentence) that returns the list of lengths of the words in "
                      "sentence (words are separated by whitespace)."),
        "tests": [(["the quick brown fox"], [3, 5, 5, 3]), ([""], []), (["  a  bb "], [1, 2]), (["hello"], [5])],
        "solution": "def word_lengths(sentence):\n    return [len(w) for w in sentence.split()]\n",
    },
    {
        "id": "count-islands",
        "fn_name": "count_islands",
        "statement": ("Write a function count_islands(grid) where grid is a list of equal-length strings of '1' "
                      "(land) and '0' (water). Return the number of islands: groups of land cells connected "
                      "horizontally or vertically."),
        "tests": [([["11000", "11000", "00100", "00011"]], 3), ([["0"]], 0), ([["1"]], 1), ([["101", "010", "101"]], 5),
                  ([["111", "101", "111"]], 1)],
        "solution": ("def count_islands(grid):\n    seen = set()\n    count = 0\n"
                     "    for r in range(len(grid)):\n        for c in range(len(grid[0])):\n"
                     "            if grid[r][c] != '1' or (r, c) in seen:\n                continue\n"
                     "            count += 1\n            stack = [(r, c)]\n            seen.add((r, c))\n"
                     "            while stack:\n                y, x = stack.pop()\n"
                     "                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):\n"
                     "                    if 0 <= ny < len(grid) and 0 <= nx < len(grid[0]) and grid[ny][nx] == '1' "
                     "and (ny, nx) not in seen:\n"
                     "                        seen.add((ny, nx))\n                        stack.append((ny, nx))\n"
                     "    return count\n"),
    },
    {
        "id": "mean-of-list",
        "fn_name": "mean",
        "statement": ("Write a function mean(nums) that returns the arithmetic mean of the non-empty list nums as a "
                      "float. Answers within 1e-6 of the exact mean are accepted."),
        "float_tolerance": 1e-6,
        "tests": [([[1, 2, 3, 4]], 2.5), ([[5]], 5.0), ([[-1, 1]], 0.0), ([[0.1, 0.2]], 0.15)],
        "solution": "def mean(nums):\n    return sum(nums) / len(nums)\n",
    },
]
"""35 problems: 22 read stdin and print, 13 are functions."""

SHOWN_EXAMPLES = 1
"""How many tests of each problem the prompt shows as examples (the rest stay hidden)."""
